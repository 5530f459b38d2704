-- Node heartbeats (see the SQLite 0003 migration). Every Easel process records itself here
-- every few seconds; the nodes seen recently are how many shares a limit is cut into when the
-- shared limiter (Redis) is unreachable and each node falls back to enforcing its own share.
CREATE TABLE nodes (
    id         TEXT PRIMARY KEY,
    -- "api", "worker" or "api+worker"; informational.
    role       TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    last_seen  BIGINT NOT NULL
);
-- nodes_live (last_seen >= since) and nodes_purge (last_seen < before).
CREATE INDEX nodes_last_seen ON nodes (last_seen);
