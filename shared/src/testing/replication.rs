//! A primary and a streaming standby on private clusters, for failover tests: the standby
//! replicates synchronously (the primary's `synchronous_standby_names` names it) or
//! asynchronously, from the primary's port or from a proxy the test puts in between to make it lag.

use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};

use crate::pgcluster::{ClusterError, Durability, PrivateCluster};

/// The name the standby replicates under (and `synchronous_standby_names` lists).
pub const STANDBY_NAME: &str = "trawl_standby";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replication {
    /// Every commit on the primary waits until the standby has flushed it.
    Synchronous,
    /// Commits return at once; the standby follows as fast as its link allows.
    Asynchronous,
}

/// A throwaway primary whose commits can wait for a standby: the private cluster's test settings,
/// but `synchronous_commit` and full-page writes on (a standby is made from a base backup).
pub fn start_primary() -> Result<PrivateCluster, ClusterError> {
    PrivateCluster::start_with(
        Durability::Throwaway,
        &[("synchronous_commit", "on"), ("full_page_writes", "on")],
    )
}

/// Starts a standby of `primary` replicating from `upstream_port` and, for
/// [`Replication::Synchronous`], makes the primary wait for it; returns once it streams.
pub async fn attach_standby(
    primary: &PrivateCluster,
    upstream_port: u16,
    replication: Replication,
) -> Result<PrivateCluster, String> {
    // pg_basebackup and pg_ctl block; a scoped thread keeps them off the runtime's threads.
    let standby = std::thread::scope(|scope| {
        scope
            .spawn(|| primary.start_standby(Durability::Throwaway, upstream_port, STANDBY_NAME))
            .join()
    })
    .map_err(|_| "the standby thread panicked".to_owned())?
    .map_err(|e| e.to_string())?;
    let mut admin = PgConnection::connect(&primary.url("postgres"))
        .await
        .map_err(|e| e.to_string())?;
    if replication == Replication::Synchronous {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'"
        )))
        .execute(&mut admin)
        .await
        .map_err(|e| e.to_string())?;
        sqlx::query("SELECT pg_reload_conf()")
            .execute(&mut admin)
            .await
            .map_err(|e| e.to_string())?;
    }
    let wanted = match replication {
        Replication::Synchronous => "sync",
        Replication::Asynchronous => "async",
    };
    let started = Instant::now();
    loop {
        let state: Option<String> = sqlx::query_scalar(
            "SELECT sync_state FROM pg_stat_replication
              WHERE application_name = $1 AND state = 'streaming'",
        )
        .bind(STANDBY_NAME)
        .fetch_optional(&mut admin)
        .await
        .map_err(|e| e.to_string())?;
        if state.as_deref() == Some(wanted) {
            return Ok(standby);
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(format!(
                "the standby did not stream as {wanted} within 60 s (state {state:?})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A database URL listing every cluster's host, in the order given.
pub fn multi_host_url(clusters: &[&PrivateCluster], database: &str) -> String {
    let hosts: Vec<String> = clusters
        .iter()
        .map(|c| format!("127.0.0.1:{}", c.port()))
        .collect();
    format!("postgres://postgres@{}/{database}", hosts.join(","))
}
