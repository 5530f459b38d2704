-- A tenant's submit burst: how many submits it may send at once (the bucket of its rate
-- limit). NULL: the configured default (limits.tenant_burst), so changing the default moves
-- every tenant that never had its own.
ALTER TABLE tenants ADD COLUMN burst INTEGER;
