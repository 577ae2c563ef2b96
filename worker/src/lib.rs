//! The worker: leases one account, logs in, leases jobs its account can do, speaks Instagram's
//! three API types through the shared limiter, checkpoints pagination and stores results.
//!
//! It must not keep state that another worker needs anywhere but PostgreSQL.
//!
//! In progress (issue 5): so far it holds the reader of Instaloader session files
//! ([`session_file`]); accounts with sealed secrets and fenced leases are in
//! `trawl_shared::accounts`. The worker process, the Instagram client and the crawlers come next.
//! Nothing here runs a worker yet.

pub mod session_file;
