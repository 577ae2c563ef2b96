-- The shared rate-limit ledger (design §5): a sliding-window log per (scope, query type) on the
-- database clock, and the penalties left by 429s and server hints.
--
-- One function grants or refuses a permit in one round trip. Acquirers of one scope are serialised
-- by a transaction-level advisory lock on the scope, because the all-GraphQL window spans every
-- query type of the scope; different scopes never wait for each other.

CREATE TABLE limiter_grants (
    scope      text        NOT NULL,
    query_type text        NOT NULL,
    graphql    boolean     NOT NULL,
    granted_at timestamptz NOT NULL
);
CREATE INDEX limiter_grants_key ON limiter_grants (scope, query_type, granted_at);
CREATE INDEX limiter_grants_graphql ON limiter_grants (scope, granted_at) WHERE graphql;
-- BRIN: pruning by age needs only a coarse index, and a BRIN costs almost nothing per insert.
CREATE INDEX limiter_grants_age ON limiter_grants USING brin (granted_at);

CREATE TABLE limiter_penalties (
    scope  text        NOT NULL,
    -- 'iphone' and 'other' as in Instaloader's two penalties; 'server' for a server's own hint.
    source text        NOT NULL CHECK (source IN ('iphone', 'other', 'server')),
    until  timestamptz NOT NULL,
    PRIMARY KEY (scope, source)
);

-- Takes the transaction-level advisory lock of every scope, sorted, so that two callers with
-- overlapping scopes take them in the same order and cannot deadlock. Released at commit.
CREATE FUNCTION trawl_limiter_lock(p_scopes text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    s text;
BEGIN
    IF cardinality(p_scopes) = 1 THEN
        PERFORM pg_advisory_xact_lock(hashtextextended('trawl-limiter:' || p_scopes[1], 0));
        RETURN;
    END IF;
    FOR s IN SELECT DISTINCT x FROM unnest(p_scopes) AS x ORDER BY x LOOP
        PERFORM pg_advisory_xact_lock(hashtextextended('trawl-limiter:' || s, 0));
    END LOOP;
END;
$$;

-- Grants one permit of `p_query_type` in every scope of `p_scopes`, or says how long to wait.
-- Windows are half-open: a grant at s is in the window of length W ending at t when t - W < s <= t.
-- `p_at` fakes the clock for tests; NULL means the database clock at the moment the locks are held.
CREATE FUNCTION trawl_limiter_acquire(
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
    OUT type_used    bigint
)
LANGUAGE plpgsql
-- Trawl's connections force custom plans (for the queue's lease); these small index range scans
-- are best with plpgsql's cached plans, which saves re-planning four statements per permit.
SET plan_cache_mode = auto
AS $$
DECLARE
    s        text;
    t        timestamptz;
    earliest timestamptz := '-infinity';
    n        bigint;
    oldest   timestamptz;
    blocked  timestamptz;
    used     bigint := 0;
BEGIN
    PERFORM trawl_limiter_lock(p_scopes);
    t := coalesce(p_at, clock_timestamp());
    FOREACH s IN ARRAY p_scopes LOOP
        -- The scope's penalty rides along with the per-type count: one statement, not two.
        SELECT count(*), min(g.granted_at),
               (SELECT max(p.until) FROM limiter_penalties p WHERE p.scope = s)
          INTO n, oldest, blocked
          FROM limiter_grants g
         WHERE g.scope = s AND g.query_type = p_query_type
           AND g.granted_at > t - p_type_window AND g.granted_at <= t;
        IF n >= p_type_cap THEN
            earliest := greatest(earliest, oldest + p_type_window + p_type_margin);
        END IF;
        IF blocked IS NOT NULL THEN
            earliest := greatest(earliest, blocked);
        END IF;
        used := greatest(used, n);
        IF p_graphql THEN
            SELECT count(*), min(g.granted_at) INTO n, oldest FROM limiter_grants g
             WHERE g.scope = s AND g.graphql
               AND g.granted_at > t - p_gql_window AND g.granted_at <= t;
            IF n >= p_gql_cap THEN
                earliest := greatest(earliest, oldest + p_gql_window + p_gql_margin);
            END IF;
        END IF;
        IF p_iphone THEN
            SELECT count(*), min(g.granted_at) INTO n, oldest FROM limiter_grants g
             WHERE g.scope = s AND g.query_type = p_query_type
               AND g.granted_at > t - p_iph_window AND g.granted_at <= t;
            IF n >= p_iph_cap THEN
                earliest := greatest(earliest, oldest + p_iph_window + p_iph_margin);
            END IF;
        END IF;
    END LOOP;
    at := t;
    IF earliest > t THEN
        granted := false;
        wait_seconds := extract(epoch FROM earliest - t);
        type_used := used;
        RETURN;
    END IF;
    IF cardinality(p_scopes) = 1 THEN
        INSERT INTO limiter_grants (scope, query_type, graphql, granted_at)
        VALUES (p_scopes[1], p_query_type, p_graphql, t);
    ELSE
        INSERT INTO limiter_grants (scope, query_type, graphql, granted_at)
        SELECT x, p_query_type, p_graphql, t FROM unnest(p_scopes) AS x;
    END IF;
    granted := true;
    wait_seconds := 0;
    type_used := used + 1;
END;
$$;

-- Records the penalty of a 429 for `p_query_type` in every scope of `p_scopes` (Instaloader's
-- "untracked queries" rule): the server's window is taken to be full from its oldest entry, which
-- blocks every query type of the scope until that entry leaves the window (plus margin). Returns the
-- latest penalty end.
CREATE FUNCTION trawl_limiter_penalise(
    p_scopes      text[],
    p_query_type  text,
    p_iphone      boolean,
    p_window      interval,
    p_margin      interval,
    p_at          timestamptz
) RETURNS timestamptz
LANGUAGE plpgsql
SET plan_cache_mode = auto
AS $$
DECLARE
    s      text;
    t      timestamptz;
    oldest timestamptz;
    latest timestamptz := '-infinity';
    src    text := CASE WHEN p_iphone THEN 'iphone' ELSE 'other' END;
BEGIN
    PERFORM trawl_limiter_lock(p_scopes);
    t := coalesce(p_at, clock_timestamp());
    FOREACH s IN ARRAY p_scopes LOOP
        SELECT min(g.granted_at) INTO oldest FROM limiter_grants g
         WHERE g.scope = s AND g.query_type = p_query_type
           AND g.granted_at > t - p_window AND g.granted_at <= t;
        -- No request of that type in the window: the 429 itself is the oldest.
        oldest := coalesce(oldest, t);
        INSERT INTO limiter_penalties (scope, source, until)
        VALUES (s, src, oldest + p_window + p_margin)
        ON CONFLICT (scope, source) DO UPDATE
           SET until = greatest(limiter_penalties.until, excluded.until);
        latest := greatest(latest, oldest + p_window + p_margin);
    END LOOP;
    RETURN latest;
END;
$$;
