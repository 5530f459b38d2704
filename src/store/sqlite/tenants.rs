//! Tenants, their API keys, and upstream provider keys on SQLite.

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::base::clock::Millis;
use crate::store::{
    ApiKeyRecord, NewApiKey, NewProviderKey, NewTenant, ProviderKeyRecord, StoreError, StoreResult,
    Tenant,
};

const TENANT_COLUMNS: &str =
    "t.id, t.name, t.rpm_limit, t.concurrency_limit, t.created_at, t.burst";

fn tenant_from_row(row: &Row<'_>) -> rusqlite::Result<Tenant> {
    Ok(Tenant {
        id: row.get(0)?,
        name: row.get(1)?,
        rpm_limit: row.get(2)?,
        concurrency_limit: row.get(3)?,
        created_at: row.get(4)?,
        burst: row.get(5)?,
    })
}

pub fn create(
    conn: &Connection,
    now: Millis,
    tenant: &NewTenant,
    key: &NewApiKey,
) -> StoreResult<Tenant> {
    conn.prepare_cached(
        "INSERT INTO tenants (id, name, rpm_limit, concurrency_limit, created_at, burst)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        tenant.id,
        tenant.name,
        tenant.rpm_limit,
        tenant.concurrency_limit,
        now,
        tenant.burst
    ])?;
    api_key_add(conn, now, &tenant.id, key)?;
    Ok(Tenant {
        id: tenant.id.clone(),
        name: tenant.name.clone(),
        rpm_limit: tenant.rpm_limit,
        concurrency_limit: tenant.concurrency_limit,
        burst: tenant.burst,
        created_at: now,
    })
}

pub fn list(conn: &Connection) -> StoreResult<Vec<Tenant>> {
    let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants t ORDER BY t.created_at, t.id");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([], tenant_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn get(conn: &Connection, tenant_id: &str) -> StoreResult<Option<Tenant>> {
    let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants t WHERE t.id = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([tenant_id], tenant_from_row)
        .optional()?)
}

pub fn update_limits(
    conn: &Connection,
    tenant_id: &str,
    rpm_limit: u32,
    concurrency_limit: u32,
    burst: Option<u32>,
) -> StoreResult<Tenant> {
    let updated = conn
        .prepare_cached(
            "UPDATE tenants SET rpm_limit = ?2, concurrency_limit = ?3, burst = ?4 WHERE id = ?1",
        )?
        .execute(params![tenant_id, rpm_limit, concurrency_limit, burst])?;
    if updated == 0 {
        return Err(StoreError::NotFound);
    }
    get(conn, tenant_id)?.ok_or(StoreError::NotFound)
}

pub fn api_key_add(
    conn: &Connection,
    now: Millis,
    tenant_id: &str,
    key: &NewApiKey,
) -> StoreResult<()> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO api_keys (id, tenant_id, key_hash, prefix, created_at)
             SELECT ?1, id, ?3, ?4, ?5 FROM tenants WHERE id = ?2",
        )?
        .execute(params![
            key.id,
            tenant_id,
            &key.key_hash[..],
            key.prefix,
            now
        ])?;
    if inserted == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub fn api_key_find(conn: &Connection, key_hash: &[u8; 32]) -> StoreResult<Option<ApiKeyRecord>> {
    let sql = format!(
        "SELECT {TENANT_COLUMNS}, k.key_hash FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
         WHERE k.key_hash = ?1 AND k.revoked_at IS NULL"
    );
    let found = conn
        .prepare_cached(&sql)?
        .query_row([&key_hash[..]], |row| {
            let hash: Vec<u8> = row.get(6)?;
            Ok((tenant_from_row(row)?, hash))
        })
        .optional()?;
    Ok(found.and_then(|(tenant, hash)| {
        let key_hash: [u8; 32] = hash.try_into().ok()?;
        Some(ApiKeyRecord { key_hash, tenant })
    }))
}

const PROVIDER_KEY_COLUMNS: &str = "id, provider, secret_sealed, fingerprint, rpm_limit, \
     concurrency_limit, endpoint, priority, project, enabled, created_at, last_error";

fn provider_key_from_row(row: &Row<'_>) -> rusqlite::Result<ProviderKeyRecord> {
    Ok(ProviderKeyRecord {
        id: row.get(0)?,
        provider: row.get(1)?,
        secret_sealed: row.get(2)?,
        fingerprint: row.get(3)?,
        rpm_limit: row.get(4)?,
        concurrency_limit: row.get(5)?,
        endpoint: row.get(6)?,
        priority: row.get(7)?,
        project: row.get(8)?,
        enabled: row.get(9)?,
        created_at: row.get(10)?,
        last_error: row.get(11)?,
    })
}

pub fn provider_key_add(
    conn: &Connection,
    now: Millis,
    key: &NewProviderKey,
) -> StoreResult<ProviderKeyRecord> {
    conn.prepare_cached(
        "INSERT INTO provider_keys (id, provider, secret_sealed, fingerprint, rpm_limit,
             concurrency_limit, endpoint, priority, project, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        key.id,
        key.provider,
        key.secret_sealed,
        key.fingerprint,
        key.rpm_limit,
        key.concurrency_limit,
        key.endpoint,
        key.priority,
        key.project,
        now
    ])?;
    let sql = format!("SELECT {PROVIDER_KEY_COLUMNS} FROM provider_keys WHERE id = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([&key.id], provider_key_from_row)?)
}

pub fn provider_key_list(conn: &Connection) -> StoreResult<Vec<ProviderKeyRecord>> {
    let sql = format!(
        "SELECT {PROVIDER_KEY_COLUMNS} FROM provider_keys ORDER BY provider, priority DESC, created_at"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([], provider_key_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn provider_key_set_enabled(
    conn: &Connection,
    id: &str,
    enabled: bool,
    last_error: Option<&str>,
) -> StoreResult<()> {
    let changed = conn
        .prepare_cached("UPDATE provider_keys SET enabled = ?2, last_error = ?3 WHERE id = ?1")?
        .execute(params![id, enabled, last_error])?;
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}
