//! The core every Trawl process shares: configuration, domain types (job kinds and states, job
//! specifications and their validation), the PostgreSQL pool and schema checks, the job queue with its
//! leases and fencing, leader election for singleton maintenance, the private throwaway PostgreSQL
//! cluster used by tests and `trawl demo`, and metric helpers.
//!
//! It must not know HTTP routes or Instagram's wire format: those belong to `scheduler/` and
//! `worker/`. Everything here talks to PostgreSQL with the database clock (`now()`), never a process's
//! wall clock, so that any number of processes on any number of machines agree on time.
//!
//! The modules:
//!
//! - `config`: the layered configuration (defaults, `trawl.toml`, `TRAWL_*`, flags) and its checks;
//! - `domain`: job kinds, states and specifications, and their validation;
//! - `batch`: JSONL batch files of job specifications, line by line;
//! - `duration`: human durations (`90s`, `1d`) in configuration and options;
//! - `db`: the pool, migrations and the schema checks a process runs at start;
//! - `queue`: the job queue: submit with dedup, lease, heartbeat, checkpoint, complete, fail, snooze,
//!   all fenced by the lease token;
//! - `results`: the crawl results (`ig_*` tables): the row types, the upserts, export reads and
//!   counts; every statement on those tables;
//! - `accounts`: Instagram accounts, their sealed secrets and their leases;
//! - `proxies`: the forward proxies accounts leave through, their sealed credentials, their health;
//! - `crypto`, `secret`: AES-GCM sealing of secrets at rest, and values that never print;
//! - `tokens`: the API's scoped bearer tokens, stored as hashes;
//! - `limiter`: the shared rate limiter (the PostgreSQL ledger, local pacing, server hints);
//! - `blobs`: the content-addressed store for downloaded media (a local directory or an
//!   S3-compatible bucket), written through verified, atomic, deduplicating writers;
//! - `leader`: leader election for singleton maintenance;
//! - `primary`: finding the writable primary among a URL's hosts, and following it after a
//!   failover;
//! - `metrics`: metric registration helpers;
//! - `shutdown`: the signal every long-running task watches;
//! - `pgcluster`: a private throwaway PostgreSQL cluster (tests and `trawl demo`);
//! - `testing` (feature `testing`): a fresh migrated database per test, and installing missing tools.

pub mod accounts;
pub mod batch;
pub mod blobs;
pub mod config;
pub mod crypto;
pub mod db;
pub mod domain;
pub mod duration;
pub mod leader;
pub mod limiter;
pub mod metrics;
pub mod pgcluster;
pub mod primary;
pub mod proxies;
pub mod queue;
pub mod results;
pub mod secret;
pub mod shutdown;
pub mod streams;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tokens;

pub use config::Config;
pub use domain::{JobKind, JobSpec, JobState, NewJob, Platform};
pub use queue::Queue;
