-- The persistent job queue (design §3).
--
-- Hot path: the lease statement walks `jobs_runnable` (queued jobs in priority and run_at order) and
-- nothing else. Finished jobs leave that partial index at once, so a table that grows to millions
-- of finished rows does not slow the lease. No trigger runs per row: NOTIFY is sent once per
-- submission statement by the application.

CREATE TYPE job_state AS ENUM ('queued', 'running', 'completed', 'failed', 'cancelled');

CREATE TABLE jobs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Text, not an enum: a row written by a newer binary (or by hand) with a kind this binary does
    -- not know must fail that one job with a decode error, not break every lease.
    kind             text        NOT NULL CHECK (length(kind) BETWEEN 1 AND 64),
    target           text        NOT NULL CHECK (length(target) BETWEEN 1 AND 256),
    payload          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    state            job_state   NOT NULL DEFAULT 'queued',
    priority         smallint    NOT NULL DEFAULT 0,
    run_at           timestamptz NOT NULL DEFAULT now(),
    attempt          integer     NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts     integer     NOT NULL CHECK (max_attempts >= 1),
    unique_key       text        NOT NULL,
    recrawl_every    interval,
    lease_owner      text,
    lease_token      uuid,
    lease_expires_at timestamptz,
    -- Pagination progress of the current crawl, written in the same transaction as a page's results.
    checkpoint       jsonb,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    attempted_at     timestamptz,
    finished_at      timestamptz,
    CONSTRAINT running_jobs_hold_a_lease CHECK (
        (state = 'running') = (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)
    ),
    CONSTRAINT terminal_jobs_have_finished_at CHECK (
        (state IN ('completed', 'failed', 'cancelled')) = (finished_at IS NOT NULL)
    )
);

-- Exactly the lease query's filter and order.
CREATE INDEX jobs_runnable ON jobs (priority DESC, run_at, id) WHERE state = 'queued';
-- Dedup among active jobs; finished jobs do not block a new crawl of the same target.
CREATE UNIQUE INDEX jobs_active_unique_key ON jobs (unique_key) WHERE state IN ('queued', 'running');
-- The rescuer's scan of expired leases.
CREATE INDEX jobs_lease_expiry ON jobs (lease_expires_at) WHERE state = 'running';
-- Retention: finished jobs by age.
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;

-- Kinds whose jobs are not leased until resumed.
CREATE TABLE paused_kinds (
    kind      text PRIMARY KEY,
    paused_at timestamptz NOT NULL DEFAULT now()
);
