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
