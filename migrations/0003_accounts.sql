-- Instagram accounts (design §4). A worker leases exactly one (exclusive, heartbeated, fenced by
-- its token, like a job). Passwords and session cookies are stored sealed (shared::crypto), never
-- in clear.

CREATE TYPE account_state AS ENUM ('available', 'leased', 'cooldown', 'checkpoint', 'disabled');

CREATE TABLE accounts (
    name               text          PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 64),
    anonymous          boolean       NOT NULL DEFAULT false,
    egress_group       text          CHECK (egress_group IS NULL OR length(egress_group) BETWEEN 1 AND 64),
    state              account_state NOT NULL DEFAULT 'available',
    cooldown_until     timestamptz,
    error_score        integer       NOT NULL DEFAULT 0,
    last_error         text,
    password_sealed    bytea,
    session_sealed     bytea,
    session_updated_at timestamptz,
    lease_owner        text,
    lease_token        uuid,
    lease_expires_at   timestamptz,
    created_at         timestamptz   NOT NULL DEFAULT now(),
    updated_at         timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT leased_accounts_hold_a_lease CHECK (
        (state = 'leased') = (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)
    ),
    CONSTRAINT cooldowns_have_an_end CHECK ((state = 'cooldown') = (cooldown_until IS NOT NULL)),
    CONSTRAINT logins_have_a_secret CHECK (
        anonymous OR password_sealed IS NOT NULL OR session_sealed IS NOT NULL
    )
);
