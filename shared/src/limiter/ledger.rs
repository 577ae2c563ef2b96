//! The exact, shared, persistent layer: a sliding-window log in PostgreSQL.
//!
//! Every decision is made by one SQL function (`trawl_limiter_acquire`, migration 0002) under a
//! transaction-level advisory lock per scope, so concurrent acquirers on any number of connections
//! and processes never overshoot a window, and state survives restarts and an account moving to
//! another worker. Times are the database's (`clock_timestamp()` once the locks are held), never a
//! worker's wall clock; tests pass explicit times to fake the clock. After a promotion that may
//! have lost grants, a fence in front of that function treats every window as full until no lost
//! grant can still be in it (migration 0008, docs/failover.md).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::types::PgInterval;

use super::{Profile, QueryType, Request, Scope, Window};

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("rate-limit ledger unavailable: {0}")]
    Database(#[from] sqlx::Error),
}

/// The ledger's answer to one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// One permit recorded at `at` in every scope of the request.
    Granted {
        at: DateTime<Utc>,
        /// Grants of this query type in its window for the busiest scope, this one included.
        type_used: u32,
    },
    /// Nothing recorded; the earliest the request may be let through is `wait` after `at`.
    Wait {
        at: DateTime<Utc>,
        wait: Duration,
        type_used: u32,
        /// Refused by the failover fence (docs/failover.md), not by a full window or a penalty.
        fenced: bool,
    },
}

/// Usage of one key of a scope, for `trawl limits`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyUsage {
    pub query_type: String,
    /// Grants in the per-type window, and its cap.
    pub used: u32,
    pub cap: u32,
    /// For `iphone`: grants in the 30-minute window and its cap.
    pub iphone_used: Option<u32>,
    pub iphone_cap: Option<u32>,
    /// When this type could next be granted (now, when it has room).
    pub next_free: DateTime<Utc>,
    /// Requests in the last 10, 11, 20, 22, 30 and 60 minutes (scaled by `time_scale`).
    pub recent: [u32; 6],
}

/// Everything `trawl limits` shows for one scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScopeUsage {
    pub scope: String,
    pub at: DateTime<Utc>,
    pub keys: Vec<KeyUsage>,
    /// Grants in the scope's shared window and its cap: all-GraphQL for an Instagram scope, the
    /// platform's shared window for a scope of another platform's tiers (0 and 0 when it has
    /// none).
    pub graphql_used: u32,
    pub graphql_cap: u32,
    pub penalty_until: Option<DateTime<Utc>>,
}

/// The minutes of Instaloader's per-type request table (docs/rate-limits.md).
pub const RECENT_MINUTES: [u32; 6] = [10, 11, 20, 22, 30, 60];

#[derive(Debug, Clone)]
pub struct Ledger {
    pool: PgPool,
    profile: Profile,
}

fn interval(d: Duration) -> PgInterval {
    PgInterval {
        months: 0,
        days: 0,
        microseconds: i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
    }
}

fn secs_to_duration(s: f64) -> Duration {
    if s.is_finite() && s > 0.0 {
        Duration::from_secs_f64(s)
    } else {
        Duration::ZERO
    }
}

impl Ledger {
    pub fn new(pool: PgPool, profile: Profile) -> Self {
        Self { pool, profile }
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    fn scope_keys(&self, request: &Request) -> Vec<String> {
        self.profile
            .scopes(request)
            .iter()
            .map(Scope::key)
            .collect()
    }

    /// Grants one permit or says exactly how long to wait. `at` fakes the clock (tests only).
    pub async fn try_acquire(
        &self,
        request: &Request,
        at: Option<DateTime<Utc>>,
    ) -> Result<Decision, LedgerError> {
        let q = &request.query_type;
        let scopes = self.scope_keys(request);
        let type_window = self.profile.type_window(q);
        // The function's second window is all-GraphQL for Instagram and a platform's shared
        // window for its tiers: an account's grants are all of its one platform, so the rows
        // flagged as counting in it never mix the two.
        let shared = self.profile.shared_window(q);
        let second = shared.unwrap_or(self.profile.graphql);
        let (granted, at, wait_seconds, type_used, fenced): (bool, DateTime<Utc>, f64, i64, bool) =
            sqlx::query_as(
                "SELECT granted, at, wait_seconds, type_used, fenced FROM trawl_limiter_acquire_fenced(
                    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            )
            .bind(&scopes)
            .bind(q.key())
            .bind(shared.is_some())
            .bind(*q == QueryType::Iphone)
            .bind(type_window.cap as i32)
            .bind(interval(type_window.window))
            .bind(interval(type_window.margin))
            .bind(second.cap as i32)
            .bind(interval(second.window))
            .bind(interval(second.margin))
            .bind(self.profile.iphone.cap as i32)
            .bind(interval(self.profile.iphone.window))
            .bind(interval(self.profile.iphone.margin))
            .bind(at)
            .fetch_one(&self.pool)
            .await?;
        let type_used = u32::try_from(type_used).unwrap_or(u32::MAX);
        Ok(if granted {
            Decision::Granted { at, type_used }
        } else {
            Decision::Wait {
                at,
                wait: secs_to_duration(wait_seconds),
                type_used,
                fenced,
            }
        })
    }

    /// Records the penalty of a 429 for the request's type in all its scopes (the request itself
    /// was already granted and recorded). Returns when the penalty ends.
    pub async fn record_429(
        &self,
        request: &Request,
        at: Option<DateTime<Utc>>,
    ) -> Result<DateTime<Utc>, LedgerError> {
        let q = &request.query_type;
        let window: Window = if *q == QueryType::Iphone {
            self.profile.iphone
        } else {
            self.profile.type_window(q)
        };
        let scopes = self.scope_keys(request);
        Ok(
            sqlx::query_scalar("SELECT trawl_limiter_penalise($1, $2, $3, $4, $5, $6)")
                .bind(&scopes)
                .bind(q.key())
                .bind(*q == QueryType::Iphone)
                .bind(interval(window.window))
                .bind(interval(window.margin))
                .bind(at)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Blocks every scope of the request until `until`, as a server hint asked (never shortening
    /// a longer penalty).
    pub async fn block_until(
        &self,
        request: &Request,
        until: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let scopes = self.scope_keys(request);
        sqlx::query(
            "INSERT INTO limiter_penalties (scope, source, until)
             SELECT s, 'server', $2 FROM unnest($1::text[]) AS s
             ON CONFLICT (scope, source) DO UPDATE
                SET until = greatest(limiter_penalties.until, excluded.until)",
        )
        .bind(&scopes)
        .bind(until)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets grants older than the history (an hour by default) and penalties that ended.
    ///
    /// The cut-off is `now()`, not `clock_timestamp()`: a volatile function cannot bound an index
    /// scan, and the maintenance leader runs this every few seconds over a ledger that holds an
    /// hour of every account's grants (a sequential scan of a million rows each time; with a
    /// stable bound the `limiter_grants_age` BRIN index finds the few expired pages).
    pub async fn prune(&self) -> Result<u64, LedgerError> {
        let grants =
            sqlx::query("DELETE FROM limiter_grants WHERE granted_at < now() - $1::interval")
                .bind(interval(self.profile.history))
                .execute(&self.pool)
                .await?
                .rows_affected();
        sqlx::query("DELETE FROM limiter_penalties WHERE until < clock_timestamp()")
            .execute(&self.pool)
            .await?;
        Ok(grants)
    }

    /// Every scope with a grant or a running penalty in the history.
    pub async fn active_scopes(&self) -> Result<Vec<Scope>, LedgerError> {
        let keys: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT scope FROM limiter_grants
              WHERE granted_at > clock_timestamp() - $1::interval
             UNION
             SELECT scope FROM limiter_penalties WHERE until > clock_timestamp()
             ORDER BY 1 LIMIT 1000",
        )
        .bind(interval(self.profile.history))
        .fetch_all(&self.pool)
        .await?;
        Ok(keys
            .into_iter()
            .filter_map(|k| {
                if let Some(a) = k.strip_prefix("account:") {
                    Some(Scope::Account(a.to_owned()))
                } else {
                    k.strip_prefix("egress:")
                        .map(|e| Scope::Egress(e.to_owned()))
                }
            })
            .collect())
    }

    /// Usage of every key of `scope` at `at` (database clock when `None`).
    pub async fn usage(
        &self,
        scope: &Scope,
        at: Option<DateTime<Utc>>,
    ) -> Result<ScopeUsage, LedgerError> {
        let key = scope.key();
        let at: DateTime<Utc> = sqlx::query_scalar("SELECT coalesce($1, clock_timestamp())")
            .bind(at)
            .fetch_one(&self.pool)
            .await?;
        let minute = Duration::from_secs(60).mul_f64(self.profile.time_scale);
        let recent: Vec<PgInterval> = RECENT_MINUTES
            .iter()
            .map(|m| interval(minute * *m))
            .collect();
        let rows: Vec<(String, i64, i64, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT query_type,
                    count(*) FILTER (WHERE granted_at > $2::timestamptz - ($3::interval[])[1]),
                    count(*) FILTER (WHERE granted_at > $2 - $3[2]),
                    count(*) FILTER (WHERE granted_at > $2 - $3[3]),
                    count(*) FILTER (WHERE granted_at > $2 - $3[4]),
                    count(*) FILTER (WHERE granted_at > $2 - $3[5]),
                    count(*) FILTER (WHERE granted_at > $2 - $3[6])
             FROM limiter_grants WHERE scope = $1 AND granted_at <= $2
             GROUP BY query_type ORDER BY query_type",
        )
        .bind(&key)
        .bind(at)
        .bind(&recent)
        .fetch_all(&self.pool)
        .await?;
        let mut keys = Vec::with_capacity(rows.len());
        for (query_type, m10, m11, m20, m22, m30, m60) in rows {
            let q = QueryType::from_key(&query_type).unwrap_or(QueryType::Other);
            let window = self.profile.type_window(&q);
            let (used, oldest) = self
                .count_since(&key, Some(&query_type), false, at, window.window)
                .await?;
            let mut next_free = at;
            if used >= window.cap
                && let Some(o) = oldest
            {
                next_free = next_free.max(o + chrono_duration(window.window + window.margin));
            }
            let (iphone_used, iphone_cap) = if q == QueryType::Iphone {
                let w = self.profile.iphone;
                let (n, oldest) = self
                    .count_since(&key, Some(&query_type), false, at, w.window)
                    .await?;
                if n >= w.cap
                    && let Some(o) = oldest
                {
                    next_free = next_free.max(o + chrono_duration(w.window + w.margin));
                }
                (Some(n), Some(w.cap))
            } else {
                (None, None)
            };
            let as_u32 = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
            keys.push(KeyUsage {
                query_type,
                used,
                cap: window.cap,
                iphone_used,
                iphone_cap,
                next_free,
                recent: [m10, m11, m20, m22, m30, m60].map(as_u32),
            });
        }
        // The scope's second window: all-GraphQL for Instagram, the shared window of the
        // platform whose tiers the scope sent (none when that platform has none).
        let platform = keys
            .iter()
            .find_map(|k| match QueryType::from_key(&k.query_type) {
                Some(QueryType::Tier { platform, .. }) => Some(platform),
                _ => None,
            });
        let second = match platform {
            Some(p) => self.profile.platform_shared.get(&p).map(|(w, _)| *w),
            None => Some(self.profile.graphql),
        };
        let (graphql_used, graphql_cap) = match second {
            Some(g) => (
                self.count_since(&key, None, true, at, g.window).await?.0,
                g.cap,
            ),
            None => (0, 0),
        };
        let penalty_until: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT max(until) FROM limiter_penalties WHERE scope = $1 AND until > $2",
        )
        .bind(&key)
        .bind(at)
        .fetch_one(&self.pool)
        .await?;
        if let Some(p) = penalty_until {
            for k in &mut keys {
                k.next_free = k.next_free.max(p);
            }
        }
        Ok(ScopeUsage {
            scope: key,
            at,
            keys,
            graphql_used,
            graphql_cap,
            penalty_until,
        })
    }

    async fn count_since(
        &self,
        scope: &str,
        query_type: Option<&str>,
        graphql_only: bool,
        at: DateTime<Utc>,
        window: Duration,
    ) -> Result<(u32, Option<DateTime<Utc>>), LedgerError> {
        let (n, oldest): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
            "SELECT count(*), min(granted_at) FROM limiter_grants
             WHERE scope = $1 AND ($2::text IS NULL OR query_type = $2) AND (NOT $3 OR graphql)
               AND granted_at > $4::timestamptz - $5::interval AND granted_at <= $4",
        )
        .bind(scope)
        .bind(query_type)
        .bind(graphql_only)
        .bind(at)
        .bind(interval(window))
        .fetch_one(&self.pool)
        .await?;
        Ok((u32::try_from(n).unwrap_or(u32::MAX), oldest))
    }
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}
