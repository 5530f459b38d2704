-- The editor (src/sessions): an end user's editing sessions, their messages, and each
-- session's event log for live sockets. Timestamps are milliseconds since the Unix epoch.

CREATE TABLE editor_sessions (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    title         TEXT NOT NULL,
    -- 1: no title was given; the first message names the session.
    auto_title    INTEGER NOT NULL DEFAULT 0,
    message_count INTEGER NOT NULL DEFAULT 0,
    -- The last event's id: event ids and message order come from it.
    counter       INTEGER NOT NULL DEFAULT 0,
    -- Bumped by every change of the session or its messages: the list's order.
    touched_at    INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    deleted_at    INTEGER
);
CREATE INDEX editor_sessions_owner ON editor_sessions (tenant_id, user_id, touched_at);

CREATE TABLE editor_messages (
    id          TEXT PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES editor_sessions (id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    role        TEXT NOT NULL,
    text        TEXT NOT NULL,
    params      TEXT NOT NULL,
    image_ids   TEXT NOT NULL,
    edited_of   TEXT,
    job_id      TEXT,
    answers_job TEXT UNIQUE,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX editor_messages_session ON editor_messages (session_id, seq);
CREATE INDEX editor_messages_job ON editor_messages (job_id) WHERE job_id IS NOT NULL;

CREATE TABLE editor_events (
    session_id TEXT NOT NULL REFERENCES editor_sessions (id) ON DELETE CASCADE,
    id         INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    subject    TEXT,
    detail     TEXT,
    at         INTEGER NOT NULL,
    PRIMARY KEY (session_id, id)
);
