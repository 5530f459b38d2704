-- The image library (src/uploads): stored objects, one per content hash per tenant, and the
-- image records that hold them. Timestamps are milliseconds since the Unix epoch.

CREATE TABLE image_objects (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    -- SHA-256 (hex) of the bytes the client sent.
    content_hash TEXT NOT NULL,
    object_key   TEXT NOT NULL,
    thumb_key    TEXT NOT NULL,
    mime         TEXT NOT NULL,
    width        INTEGER NOT NULL,
    height       INTEGER NOT NULL,
    size         BIGINT NOT NULL,
    -- pending: files being written; ready: held by records; doomed: files being deleted.
    state        TEXT NOT NULL CHECK (state IN ('pending', 'ready', 'doomed')),
    -- Image records on this object.
    holders      INTEGER NOT NULL DEFAULT 0 CHECK (holders >= 0),
    created_at   BIGINT NOT NULL
);
-- One ready object per content hash per tenant: how a second upload of the same bytes finds it.
CREATE UNIQUE INDEX image_objects_ready ON image_objects (tenant_id, content_hash)
    WHERE state = 'ready';
-- The collector: pending objects by age, doomed ones.
CREATE INDEX image_objects_unready ON image_objects (state, created_at) WHERE state <> 'ready';

CREATE TABLE images (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    -- The end user who owns the image; '' when the tenant itself does.
    owner_user    TEXT NOT NULL,
    object_id     TEXT NOT NULL REFERENCES image_objects (id),
    kind          TEXT NOT NULL,
    session_id    TEXT,
    original_name TEXT,
    -- Messages, works and jobs using the image.
    ref_count     INTEGER NOT NULL DEFAULT 0 CHECK (ref_count >= 0),
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
-- An owner's images, newest first (and by session).
CREATE INDEX images_owner ON images (tenant_id, owner_user, created_at);
CREATE INDEX images_object ON images (object_id);
