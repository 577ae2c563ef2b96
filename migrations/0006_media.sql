-- Pictures and videos: each file an item has, the URL it was last seen at, and, once downloaded
-- and verified, the blob (SHA-256 and size) that holds its bytes in the blob store. The bytes
-- themselves never enter PostgreSQL.
--
-- `item` is the media job's target (`post:SHORTCODE`, `story:ITEM_ID`, `profile:USERNAME`,
-- `highlight:ID` for a cover), so the files of one job are one index range. `position` numbers a
-- sidecar's children from 1, as the reference client numbers their files (`_1`, `_2`); 0 is the
-- item itself. A video has two rows: its picture (the thumbnail the reference client also
-- saves) and the video.
CREATE TABLE ig_media (
    item        text        NOT NULL CHECK (item ~ '^(post|story|profile|highlight):.+$'),
    position    integer     NOT NULL CHECK (position >= 0),
    variant     text        NOT NULL CHECK (variant IN ('picture', 'video')),
    url         text        NOT NULL,
    sha256      text        CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size        bigint      CHECK (size >= 0),
    stored_at   timestamptz,
    -- The CDN's Last-Modified: the reference client names and dates profile pictures and
    -- highlight covers by it.
    last_modified timestamptz,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_job_id bigint,
    PRIMARY KEY (item, position, variant),
    -- A blob is recorded whole (hash, size and time) or not at all.
    CONSTRAINT ig_media_blob_whole CHECK (
        (sha256 IS NULL) = (size IS NULL) AND (sha256 IS NULL) = (stored_at IS NULL))
);

-- Each file's `Content-Type` as the CDN sent it: the reference client names a post's or a story
-- item's file by it (`image/jpeg` → `.jpg`, `video/mp4` → `.mp4`).
ALTER TABLE ig_media ADD COLUMN content_type text;

-- Instagram's objects as they were sent, for the Instaloader export (docs/media.md). `raw` cannot
-- serve: jsonb keeps neither the order of an object's keys, which the reference client writes
-- back as it read them, nor (for posts, whose `raw` is merged) the listing's object apart from the
-- full post's. `json` keeps the text as written. Each is NULL until a crawl that reads that
-- answer stores the item, and kept when a later crawl reads other answers.
ALTER TABLE ig_users
    -- The profile query's `data.user`, and the app's `users/<id>/info/` `user`.
    ADD COLUMN profile_as_sent json,
    ADD COLUMN app_user_as_sent json;
ALTER TABLE ig_posts
    -- The post as the profile's posts listing sent it, and as the post's own query sent it.
    ADD COLUMN listing_as_sent json,
    ADD COLUMN full_as_sent json;
ALTER TABLE ig_comments
    -- The comment (or reply) as its page sent it, without the replies it carried.
    ADD COLUMN as_sent json;
ALTER TABLE ig_stories
    -- The app's reel item (`raw`), the web GraphQL item of the same id, and, for a current story,
    -- the web reel's `user` object (the reference client's owner of the item).
    ADD COLUMN app_item_as_sent json,
    ADD COLUMN web_item_as_sent json,
    ADD COLUMN reel_user_as_sent json;
