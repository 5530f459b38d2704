-- Key health the key pool persists (see the SQLite 0002 migration): why the pool disabled a
-- key; NULL when enabled or disabled by an operator.
ALTER TABLE provider_keys ADD COLUMN last_error TEXT;

-- Event streams resume by id (`id > last`). Identity values are taken at insert, not at
-- commit, so a smaller id can become visible after a larger one. Each event remembers its
-- transaction; readers only take events whose transaction is older than every transaction
-- still running (`txid < pg_snapshot_xmin(pg_current_snapshot())`), so no event can later
-- appear below an id a reader has passed.
ALTER TABLE job_events ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id();
