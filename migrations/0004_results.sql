-- Crawl results (issue 5): one row per Instagram item, keyed by Instagram's id and upserted, so an
-- item is stored once however often its page is fetched. Each row keeps the raw JSON it was read
-- from, when it was first and last seen, and the job that saw it last.
--
-- Workers write a page's rows and the job's checkpoint in one transaction (design §3).

CREATE TABLE ig_users (
    id              bigint      PRIMARY KEY,
    username        text        NOT NULL,
    full_name       text,
    is_private      boolean,
    is_verified     boolean,
    biography       text,
    follower_count  bigint,
    following_count bigint,
    post_count      bigint,
    raw             jsonb       NOT NULL,
    first_seen_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    last_job_id     bigint
);
CREATE INDEX ig_users_username ON ig_users (username);

CREATE TABLE ig_posts (
    id              bigint      PRIMARY KEY,
    shortcode       text        NOT NULL UNIQUE,
    owner_id        bigint      NOT NULL,
    owner_username  text,
    typename        text,
    taken_at        timestamptz,
    caption         text,
    like_count      bigint,
    comment_count   bigint,
    is_video        boolean,
    raw             jsonb       NOT NULL,
    first_seen_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    last_job_id     bigint
);
CREATE INDEX ig_posts_owner ON ig_posts (owner_id, taken_at DESC);

-- Comments are listed by the post's shortcode (the comment query does not return the post's id).
CREATE TABLE ig_comments (
    id              bigint      PRIMARY KEY,
    post_shortcode  text        NOT NULL,
    parent_id       bigint,
    owner_id        bigint,
    owner_username  text,
    text            text,
    created_at      timestamptz,
    like_count      bigint,
    raw             jsonb       NOT NULL,
    first_seen_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    last_job_id     bigint
);
CREATE INDEX ig_comments_post ON ig_comments (post_shortcode);

CREATE TABLE ig_follows (
    follower_id     bigint      NOT NULL,
    followee_id     bigint      NOT NULL,
    first_seen_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    last_job_id     bigint,
    PRIMARY KEY (follower_id, followee_id)
);
CREATE INDEX ig_follows_followee ON ig_follows (followee_id);

CREATE TABLE ig_hashtag_posts (
    tag             text        NOT NULL,
    post_id         bigint      NOT NULL,
    first_seen_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    last_job_id     bigint,
    PRIMARY KEY (tag, post_id)
);

-- Story items, current (highlight_id NULL) or kept in a highlight.
CREATE TABLE ig_stories (
    id              text        PRIMARY KEY,
    owner_id        bigint      NOT NULL,
    highlight_id    text,
    highlight_title text,
    taken_at        timestamptz,
    expiring_at     timestamptz,
    media_type      integer,
    raw             jsonb       NOT NULL,
    first_seen_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    last_job_id     bigint
);
CREATE INDEX ig_stories_owner ON ig_stories (owner_id, taken_at DESC);
