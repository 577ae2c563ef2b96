//! The worker: leases one account, logs in, leases jobs its account can do, speaks Instagram's
//! three API types through the shared limiter, checkpoints pagination and stores results.
//!
//! It must not keep state that another worker needs anywhere but PostgreSQL.
//!
//! Empty until the worker issue (#5) lands: the foundation issue ships the queue it will lease
//! from (`trawl_shared::queue`), and nothing here is wired into the `trawl` binary yet.
