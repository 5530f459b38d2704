-- Key health the key pool persists across restarts. `last_error` is why the pool disabled a key
-- (the upstream rejected it: 401/403); NULL when the key is enabled or an operator disabled it,
-- which is also how the scheduled probe tells the two apart (it only re-tests keys the pool
-- disabled itself).
ALTER TABLE provider_keys ADD COLUMN last_error TEXT;
