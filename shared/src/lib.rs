//! The core every Trawl process shares: configuration, domain types (job kinds and states, job
//! specifications and their validation), the PostgreSQL pool and schema checks, the job queue with its
//! leases and fencing, leader election for singleton maintenance, the private throwaway PostgreSQL
//! cluster used by tests and `trawl demo`, and metric helpers.
//!
//! It must not know HTTP routes or Instagram's wire format: those belong to `scheduler/` and
//! `worker/`. Everything here talks to PostgreSQL with the database clock (`now()`), never a process's
//! wall clock, so that any number of processes on any number of machines agree on time.

pub mod accounts;
pub mod batch;
pub mod config;
pub mod crypto;
pub mod db;
pub mod domain;
pub mod duration;
pub mod leader;
pub mod limiter;
pub mod metrics;
pub mod pgcluster;
pub mod queue;
pub mod secret;
pub mod shutdown;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tokens;

pub use config::Config;
pub use domain::{JobKind, JobSpec, JobState, NewJob};
pub use queue::Queue;
