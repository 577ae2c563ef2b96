-- Forward proxies: the exit each account's requests leave from. A proxy is a named row that any
-- number of accounts point at, so an operator re-routes accounts without re-typing a proxy's
-- credentials, and a proxy that fails rests every account behind it with one write.
--
-- `url` never holds credentials: they are sealed (like account passwords) in
-- `credentials_sealed` as `username:password`. The egress group of an account behind a proxy is
-- the account's own when set, else the proxy's `egress_group`, else the proxy's name: the
-- accounts of one exit share its per-IP windows.
CREATE TABLE proxies (
    name               text        PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9._-]{1,64}$'),
    url                text        NOT NULL CHECK (url ~ '^(http|socks5|socks5h)://[^/@?#\s]+:[0-9]{1,5}$'),
    credentials_sealed bytea,
    egress_group       text        CHECK (egress_group IS NULL OR length(egress_group) BETWEEN 1 AND 64),
    -- 'down': a worker could not get through it; its accounts are not leased until
    -- `check_after`, when the next worker to lease one checks the proxy again first.
    state              text        NOT NULL DEFAULT 'up' CHECK (state IN ('up', 'down')),
    down_reason        text,
    down_since         timestamptz,
    check_after        timestamptz,
    -- Failed checks in a row: each doubles the rest before the next check (up to a cap).
    failures           integer     NOT NULL DEFAULT 0 CHECK (failures >= 0),
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT down_proxies_say_why_and_until_when CHECK (
        (state = 'down') = (down_reason IS NOT NULL AND down_since IS NOT NULL
                            AND check_after IS NOT NULL)
    )
);

-- RESTRICT: removing a proxy that accounts still use would silently send them direct.
ALTER TABLE accounts
    ADD COLUMN proxy text REFERENCES proxies (name) ON UPDATE CASCADE ON DELETE RESTRICT;
CREATE INDEX accounts_by_proxy ON accounts (proxy) WHERE proxy IS NOT NULL;

-- Shown, never stored: an account that would be available but whose proxy is down.
ALTER TYPE account_state ADD VALUE 'proxy_down';
