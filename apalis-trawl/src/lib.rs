//! apalis 1.0 workers on Trawl's job queue: write a crawl handler as an apalis task function and
//! let Trawl's queue (`trawl_shared::queue`) lease, fence, back off and snooze it, with Trawl's shared
//! rate limiter (`trawl_shared::limiter`) in front of it.
//!
//! What it owns:
//!
//! - [`TrawlBackend`]: an apalis [`Backend`](apalis_core::backend::Backend) that leases jobs in
//!   batches (`Queue::lease`), optionally woken by `NOTIFY`, decodes each into the handler's
//!   arguments (a row that does not decode fails, permanently, and the worker goes on) and
//!   carries the job's [`JobLease`] in the task's data;
//! - [`AckLayer`], the backend's own middleware (apalis installs it on every worker built on the
//!   backend): heartbeats while the handler runs, then turns its outcome into `complete`, `fail`
//!   or `snooze`, every write fenced by the lease token. Handlers say what happened with
//!   [`TrawlJobError`];
//! - [`TrawlSink`]: submits [`JobSpec`](trawl_shared::JobSpec)s with the same validation and
//!   dedup as the HTTP API;
//! - [`LimitLayer`]: the shared ledger before the handler; a wait longer than the lease allows is
//!   a snooze, not a sleep while holding the lease.
//!
//! What it must not do: keep any job state in memory. Attempts, backoff, snoozes and rate-limit
//! windows live in PostgreSQL, where every worker and every restart sees them. So apalis's own
//! retry layer (`RetryPolicy`, which re-runs the task inside one lease and counts attempts in the
//! process) and its rate-limit layer (a per-process token bucket that knows nothing of other
//! workers) must not be stacked on a worker built on [`TrawlBackend`]: return
//! [`TrawlJobError::Retry`] and use [`LimitLayer`] instead. Nor may it become a dependency of
//! the `trawl` binary, `trawl-worker` or `trawl-scheduler`: it is a way to write handlers
//! outside them, not a part of them.
//!
//! The arguments a handler receives: a Trawl job is a row of (kind, target, options) plus its
//! attempt counters, so the backend decodes the handler's type from that row's JSON view
//! (`{"id", "kind", "target", "options", "attempt", "max_attempts", "checkpoint"}`) with serde.
//! [`TrawlTask`] is that view as a struct and the type to use unless a handler wants the decoder
//! to check more (a required option, a narrower kind). The lease itself is not in the arguments:
//! it is in the task's data as [`JobLease`], for handlers that store checkpoints.
//!
//! See docs/apalis.md for when to use this rather than the `trawl` worker, and
//! `examples/crawl_profiles.rs` for a handler against `trawl sim`.

mod ack;
mod backend;
mod limit;
mod sink;

pub use ack::{AckError, AckLayer, AckService, TrawlJobError};
pub use backend::{BackendError, Config, JobLease, TrawlBackend, TrawlTask};
pub use limit::{LimitLayer, LimitService};
pub use sink::{PushError, TrawlSink};

/// The apalis-core this crate implements, so that callers build workers with the same version.
pub use apalis_core;
