//! Realtime stream holds (docs/stream.md): which `trawl stream` process holds which v1 account's
//! stream, and the last event it turned into jobs.
//!
//! A stream lease is exclusive per account, like an account lease, but separate from it: a
//! worker crawling with the account and a stream process listening as it do not exclude each
//! other. The last event id is written in the transaction that stores the event's jobs, fenced by
//! the lease token, so an event's jobs are stored once whoever resumes the stream.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::accounts::AccountError;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
    /// Another process holds the stream now (this one's lease expired).
    #[error("the stream lease on account {0:?} is no longer held")]
    LeaseLost(String),
    /// The account was disabled or checkpointed: nobody should act as it.
    #[error("account {0:?} is disabled or out of rotation")]
    OutOfRotation(String),
}

/// A stream held by this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamLease {
    pub account: String,
    pub token: Uuid,
    /// Where to resume: the last event whose jobs were stored (`None`: from now on).
    pub last_event_id: Option<i64>,
}

/// Leases the stream of one v1 account in rotation (not disabled nor checkpointed, with a
/// password) whose stream nobody holds or whose holder stopped renewing. `None`: all are held.
pub async fn lease(
    pool: &PgPool,
    owner: &str,
    ttl: Duration,
) -> Result<Option<StreamLease>, StreamError> {
    // Two processes may pick the same account; the conflict clause lets only one take it, and
    // the other finds no row and tries again.
    let row: Option<(String, Uuid, Option<i64>)> = sqlx::query_as(
        "INSERT INTO v1_streams (account, lease_owner, lease_token, lease_expires_at)
         SELECT a.name, $1, gen_random_uuid(), now() + make_interval(secs => $2)
         FROM accounts a LEFT JOIN v1_streams s ON s.account = a.name
         WHERE a.platform = 'v1' AND a.state NOT IN ('disabled', 'checkpoint')
           AND a.password_sealed IS NOT NULL
           AND (s.account IS NULL OR s.lease_expires_at IS NULL OR s.lease_expires_at < now())
         ORDER BY a.name
         LIMIT 1
         ON CONFLICT (account) DO UPDATE SET
             lease_owner = EXCLUDED.lease_owner, lease_token = EXCLUDED.lease_token,
             lease_expires_at = EXCLUDED.lease_expires_at, updated_at = now()
           WHERE v1_streams.lease_expires_at IS NULL OR v1_streams.lease_expires_at < now()
         RETURNING account, lease_token, last_event_id",
    )
    .bind(owner)
    .bind(ttl.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(account, token, last_event_id)| StreamLease {
        account,
        token,
        last_event_id,
    }))
}

/// Extends the lease by `ttl` from now. `OutOfRotation` when the account has been disabled or
/// checkpointed meanwhile: the holder must stop acting as it and give the stream back.
pub async fn heartbeat(
    pool: &PgPool,
    lease: &StreamLease,
    ttl: Duration,
) -> Result<(), StreamError> {
    let out: Option<Option<bool>> = sqlx::query_scalar(
        "UPDATE v1_streams s SET lease_expires_at = now() + make_interval(secs => $3),
                updated_at = now()
         WHERE s.account = $1 AND s.lease_token = $2 AND s.lease_expires_at > clock_timestamp()
         RETURNING (SELECT a.state IN ('disabled', 'checkpoint')
                    FROM accounts a WHERE a.name = s.account)",
    )
    .bind(&lease.account)
    .bind(lease.token)
    .bind(ttl.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    match out {
        None => Err(StreamError::LeaseLost(lease.account.clone())),
        Some(Some(true)) => Err(StreamError::OutOfRotation(lease.account.clone())),
        Some(_) => Ok(()),
    }
}

/// Records `event_id` as handled, inside the caller's transaction (the one storing its jobs).
pub async fn advance(
    tx: &mut PgConnection,
    lease: &StreamLease,
    event_id: i64,
) -> Result<(), StreamError> {
    let done = sqlx::query(
        "UPDATE v1_streams SET last_event_id = greatest(coalesce(last_event_id, 0), $3),
                updated_at = now()
         WHERE account = $1 AND lease_token = $2 AND lease_expires_at > clock_timestamp()",
    )
    .bind(&lease.account)
    .bind(lease.token)
    .bind(event_id)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StreamError::LeaseLost(lease.account.clone()));
    }
    Ok(())
}

/// Gives the stream back at once (a stopping process), keeping where it was.
pub async fn release(pool: &PgPool, lease: &StreamLease) -> Result<(), StreamError> {
    sqlx::query(
        "UPDATE v1_streams SET lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
                updated_at = now()
         WHERE account = $1 AND lease_token = $2",
    )
    .bind(&lease.account)
    .bind(lease.token)
    .execute(pool)
    .await?;
    Ok(())
}
