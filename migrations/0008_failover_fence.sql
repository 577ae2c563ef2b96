-- The failover fence of the rate-limit ledger (docs/failover.md).
--
-- With asynchronous replication, grants committed on the old primary just before it died may never
-- reach the standby that takes over: the ledger then undercounts and the fleet would overshoot the
-- windows right after a failover. Every promotion starts a new timeline, so the ledger remembers
-- the timeline it was last written on; the first acquirer that finds itself on another one records
-- the moment (`fenced_from`), and from then on every window a request counts in is treated as full
-- until that moment plus the window's length and margin. No lost grant can be in a window after
-- that. The fence is skipped when, as far as the new primary knows, the old one committed every
-- grant only after a synchronous standby had it.

CREATE TABLE limiter_timeline (
    only_row      boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    -- The timeline of the database cluster the ledger was last written on.
    timeline      bigint      NOT NULL,
    -- Whether commits on that timeline waited for a synchronous standby.
    synchronous   boolean     NOT NULL,
    -- The last promotion: the timeline it left, when it was found, and whether it was fenced.
    promoted_from bigint,
    promoted_at   timestamptz,
    fenced_from   timestamptz
);

-- The timeline this server writes WAL on now. `pg_current_wal_lsn()` fails on a standby, so this
-- can only be asked of a primary; any login role may ask it.
CREATE FUNCTION trawl_current_timeline() RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint
$$;

-- Whether this session's commits wait until a synchronous standby has them.
CREATE FUNCTION trawl_commits_synchronously() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT current_setting('synchronous_standby_names') <> ''
       AND current_setting('synchronous_commit') IN ('on', 'remote_write', 'remote_apply')
$$;

-- Notices a promotion and returns the running fence's start (NULL when none was ever set).
-- Cheap in the common case (one row read); takes the row's lock only when something changed.
CREATE FUNCTION trawl_limiter_fence() RETURNS timestamptz
LANGUAGE plpgsql AS $$
DECLARE
    current_timeline bigint  := trawl_current_timeline();
    synchronous_now  boolean := trawl_commits_synchronously();
    known            limiter_timeline%ROWTYPE;
BEGIN
    SELECT * INTO known FROM limiter_timeline;
    IF FOUND AND known.timeline = current_timeline AND known.synchronous = synchronous_now THEN
        RETURN known.fenced_from;
    END IF;
    IF NOT FOUND THEN
        INSERT INTO limiter_timeline (timeline, synchronous)
        VALUES (current_timeline, synchronous_now)
        ON CONFLICT (only_row) DO NOTHING;
    END IF;
    SELECT * INTO known FROM limiter_timeline FOR UPDATE;
    IF known.timeline <> current_timeline THEN
        -- A promotion. Whatever the old primary committed after the standby's last record is
        -- gone, unless every commit waited for the standby.
        UPDATE limiter_timeline
           SET timeline = current_timeline,
               synchronous = synchronous_now,
               promoted_from = known.timeline,
               promoted_at = clock_timestamp(),
               fenced_from = CASE WHEN known.synchronous THEN fenced_from
                                  ELSE clock_timestamp() END;
    ELSIF known.synchronous <> synchronous_now THEN
        UPDATE limiter_timeline SET synchronous = synchronous_now;
    END IF;
    RETURN (SELECT fenced_from FROM limiter_timeline);
END;
$$;

-- `trawl_limiter_acquire` behind the fence: while a window the request counts in may still hold
-- a lost grant, the request waits until it cannot; then the ledger decides as before.
-- `fenced` says which of the two refused.
CREATE FUNCTION trawl_limiter_acquire_fenced(
    p_scopes      text[],
    p_query_type  text,
    p_graphql     boolean,
    p_iphone      boolean,
    p_type_cap    integer,
    p_type_window interval,
    p_type_margin interval,
    p_gql_cap     integer,
    p_gql_window  interval,
    p_gql_margin  interval,
    p_iph_cap     integer,
    p_iph_window  interval,
    p_iph_margin  interval,
    p_at          timestamptz,
    OUT granted      boolean,
    OUT at           timestamptz,
    OUT wait_seconds double precision,
    OUT type_used    bigint,
    OUT fenced       boolean
)
LANGUAGE plpgsql
SET plan_cache_mode = auto
AS $$
DECLARE
    fence_start timestamptz := trawl_limiter_fence();
    fence_end   timestamptz;
    t           timestamptz := coalesce(p_at, clock_timestamp());
BEGIN
    IF fence_start IS NOT NULL THEN
        fence_end := fence_start + p_type_window + p_type_margin;
        IF p_graphql THEN
            fence_end := greatest(fence_end, fence_start + p_gql_window + p_gql_margin);
        END IF;
        IF p_iphone THEN
            fence_end := greatest(fence_end, fence_start + p_iph_window + p_iph_margin);
        END IF;
        IF fence_end > t THEN
            granted := false;
            at := t;
            wait_seconds := extract(epoch FROM fence_end - t);
            type_used := p_type_cap;
            fenced := true;
            RETURN;
        END IF;
    END IF;
    SELECT a.granted, a.at, a.wait_seconds, a.type_used
      INTO granted, at, wait_seconds, type_used
      FROM trawl_limiter_acquire(p_scopes, p_query_type, p_graphql, p_iphone,
                                 p_type_cap, p_type_window, p_type_margin,
                                 p_gql_cap, p_gql_window, p_gql_margin,
                                 p_iph_cap, p_iph_window, p_iph_margin, p_at) AS a;
    fenced := false;
END;
$$;
