-- The second platform: accounts of the v1 REST API and what its crawlers store (docs/v1-client.md).
--
-- An account belongs to one platform; a worker that leases it speaks that platform's API and
-- leases only that platform's job kinds. Its password is sealed like an Instagram password; its
-- tokens are short-lived and made again by logging in, so they are never stored.

ALTER TABLE accounts
    ADD COLUMN platform text NOT NULL DEFAULT 'instagram'
        CHECK (platform IN ('instagram', 'v1'));

-- v1 results: one row per item, keyed by the item's kind and the API's id and upserted, so an item
-- is stored once however often a listing shows it. `owner_id` is the user who posted it (the post,
-- for a comment; the account, for a notification), so an export can be narrowed to one owner.
CREATE TABLE v1_items (
    item           text        NOT NULL
        CHECK (item IN ('user', 'post', 'comment', 'story', 'notification', 'hashtag', 'location')),
    id             text        NOT NULL CHECK (length(id) BETWEEN 1 AND 200),
    owner_id       text,
    raw            jsonb       NOT NULL,
    first_seen_at  timestamptz NOT NULL DEFAULT now(),
    last_seen_at   timestamptz NOT NULL DEFAULT now(),
    last_job_id    bigint,
    PRIMARY KEY (item, id)
);
CREATE INDEX v1_items_owner ON v1_items (item, owner_id);

CREATE TABLE v1_follows (
    follower_id    text        NOT NULL,
    followee_id    text        NOT NULL,
    first_seen_at  timestamptz NOT NULL DEFAULT now(),
    last_seen_at   timestamptz NOT NULL DEFAULT now(),
    last_job_id    bigint,
    PRIMARY KEY (follower_id, followee_id)
);
CREATE INDEX v1_follows_followee ON v1_follows (followee_id);

-- A `trawl stream` process holds one v1 account's realtime stream: an exclusive lease per account
-- (separate from a worker's lease on the same account, which goes on crawling), and the id of the
-- last event whose jobs were stored, written in the transaction that stored them, so a stream
-- resumed by any process after any failure turns each event into jobs once.
CREATE TABLE v1_streams (
    account          text        PRIMARY KEY REFERENCES accounts (name) ON DELETE CASCADE,
    lease_owner      text,
    lease_token      uuid,
    lease_expires_at timestamptz,
    last_event_id    bigint,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
