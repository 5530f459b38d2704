-- Retention of the delivery log (see the SQLite 0005 migration): the maintenance pass deletes
-- deliveries that ended (succeeded, failed, disabled) longer than `webhooks.retention_days`
-- ago, oldest first, in batches. Pending and in-flight deliveries are never deleted, so the
-- index holds ended rows only; `updated_at` is when a delivery ended.
CREATE INDEX webhook_deliveries_ended ON webhook_deliveries (updated_at)
    WHERE state IN ('succeeded', 'failed', 'disabled');
