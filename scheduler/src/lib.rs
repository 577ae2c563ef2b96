//! The scheduler: Trawl's HTTP JSON API (submit, list, show, cancel, retry, pause and resume,
//! stats, accounts and their proxies) behind a bearer token, and the maintenance loops (lease rescue, retention, queue metrics)
//! under a PostgreSQL advisory-lock leader.
//!
//! It must not make requests to Instagram, and it is not on the hot path of a crawl: workers lease
//! straight from PostgreSQL, so a scheduler restart never stops crawling.

pub mod api;
pub mod cursor;
pub mod maintenance;
pub mod metrics;
pub mod serve;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio::net::TcpListener;
use trawl_shared::config::Config;
use trawl_shared::db::{self, DbError};
use trawl_shared::limiter::{Ledger, Profile};
use trawl_shared::queue::{Queue, QueueSettings};
use trawl_shared::secret::Secret;
use trawl_shared::shutdown::Shutdown;
use trawl_shared::tokens::TokenSet;

use crate::api::ApiState;
use crate::maintenance::Maintenance;
use crate::metrics::SchedulerMetrics;

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(
        "no API token is configured: the API must not run open, not even on loopback. Create \
         one with `trawl token new --scope admin` and add the [[scheduler.tokens]] lines it \
         prints to trawl.toml (or set scheduler.api_token for a development set-up)"
    )]
    NoToken,
    #[error("scheduler.tokens: {0}")]
    Tokens(#[from] trawl_shared::tokens::TokenError),
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("HTTP server failed: {0}")]
    Serve(#[from] std::io::Error),
}

/// Serves the API on `listener` and runs maintenance until `shutdown`; then stops accepting
/// requests, finishes the ones in flight and gives up leadership.
pub async fn run(
    config: &Config,
    listener: TcpListener,
    shutdown: Shutdown,
) -> Result<(), SchedulerError> {
    let tokens = TokenSet::new(
        &config.scheduler.tokens,
        config.scheduler.api_token.as_ref().map(Secret::expose),
    )?;
    if tokens.is_empty() {
        return Err(SchedulerError::NoToken);
    }
    if config.scheduler.api_token.is_some() {
        tracing::warn!(
            "scheduler.api_token is a plaintext token with every scope; for production, use \
             hashed, scoped [[scheduler.tokens]] (`trawl token new`)"
        );
    }
    let pool = db::connect_as(&config.database, "trawl-scheduler").await?;
    db::check_schema(&pool).await?;
    let queue = Queue::new(pool.clone(), QueueSettings::from(&config.queue));
    let metrics = Arc::new(SchedulerMetrics::new()?);
    let is_leader = Arc::new(AtomicBool::new(false));
    let ledger = Ledger::new(pool.clone(), Profile::from_config(&config.limiter));
    let maintenance = Maintenance {
        queue: queue.clone(),
        ledger: ledger.clone(),
        interval: config.scheduler.maintenance_interval.0,
        retention: config.scheduler.retention.0,
        metrics: metrics.clone(),
        is_leader: is_leader.clone(),
    };
    let maintenance = tokio::spawn(maintenance.run(shutdown.clone()));
    let state = ApiState {
        queue,
        tokens: Arc::new(tokens),
        max_batch: config.scheduler.max_batch,
        max_body_bytes: config.scheduler.max_body_bytes,
        body_timeout: config.scheduler.body_timeout.0,
        default_max_attempts: config.queue.default_max_attempts,
        metrics,
        is_leader,
        ledger,
    };
    tracing::info!(address = %listener.local_addr()?, "scheduler listening");
    let served = serve::serve(
        listener,
        api::router(state),
        config.scheduler.header_timeout.0,
        shutdown,
    )
    .await;
    let _ = maintenance.await;
    pool.close().await;
    served.map_err(SchedulerError::from)
}

/// Test support: a scheduler on a free loopback port, stopped on demand.
#[cfg(feature = "testing")]
pub mod testing {
    use std::net::SocketAddr;

    use trawl_shared::config::Config;
    use trawl_shared::duration::HumanDuration;
    use trawl_shared::secret::Secret;
    use trawl_shared::shutdown::{self, ShutdownTrigger};

    use crate::SchedulerError;

    /// A configuration for a test scheduler on `database_url` with `token`, maintenance every 100 ms.
    pub fn config(database_url: &str, token: &str) -> Config {
        let mut config = Config::default();
        config.database.url = Secret::new(database_url);
        config.scheduler.api_token = Some(Secret::new(token));
        config.scheduler.maintenance_interval = HumanDuration::from_millis(100);
        config
    }

    pub struct RunningScheduler {
        pub addr: SocketAddr,
        stop: ShutdownTrigger,
        task: tokio::task::JoinHandle<Result<(), SchedulerError>>,
    }

    impl RunningScheduler {
        pub fn url(&self) -> String {
            format!("http://{}", self.addr)
        }

        /// Triggers shutdown and returns how the scheduler ended.
        pub async fn stop(self) -> Result<(), SchedulerError> {
            self.stop.trigger();
            self.task.await.expect("scheduler task panicked")
        }
    }

    /// Starts [`crate::run`] on 127.0.0.1:0.
    pub async fn spawn(config: Config) -> RunningScheduler {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let (stop, signal) = shutdown::channel();
        let task = tokio::spawn(async move { crate::run(&config, listener, signal).await });
        RunningScheduler { addr, stop, task }
    }
}
