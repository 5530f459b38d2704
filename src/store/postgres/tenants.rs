//! Tenants, their API keys, and upstream provider keys on PostgreSQL.

use sqlx::{FromRow, PgPool};

use super::StoreError;
use crate::base::clock::Millis;
use crate::store::{
    ApiKeyRecord, NewApiKey, NewProviderKey, NewTenant, ProviderKeyRecord, StoreResult, Tenant,
};

/// A limit as stored (INTEGER) to what the domain holds.
fn limit(value: i32, what: &str) -> StoreResult<u32> {
    u32::try_from(value).map_err(|_| StoreError::Unavailable(format!("corrupt row: bad {what}")))
}

/// A limit as the domain holds it to INTEGER; a value PostgreSQL cannot hold is refused.
fn limit_in(value: u32, what: &str) -> StoreResult<i32> {
    i32::try_from(value).map_err(|_| StoreError::Conflict(format!("{what} is too large")))
}

fn burst_in(burst: Option<u32>) -> StoreResult<Option<i32>> {
    burst.map(|b| limit_in(b, "burst")).transpose()
}

/// The columns of [`TenantRow`], for `SELECT` and `RETURNING`.
const TENANT_COLUMNS: &str = "id, name, rpm_limit, concurrency_limit, created_at, burst";

#[derive(FromRow)]
struct TenantRow {
    id: String,
    name: String,
    rpm_limit: i32,
    concurrency_limit: i32,
    created_at: Millis,
    burst: Option<i32>,
}

impl TryFrom<TenantRow> for Tenant {
    type Error = StoreError;

    fn try_from(r: TenantRow) -> StoreResult<Tenant> {
        Ok(Tenant {
            id: r.id,
            name: r.name,
            rpm_limit: limit(r.rpm_limit, "rpm_limit")?,
            concurrency_limit: limit(r.concurrency_limit, "concurrency_limit")?,
            burst: r.burst.map(|b| limit(b, "burst")).transpose()?,
            created_at: r.created_at,
        })
    }
}

pub async fn create(
    pool: &PgPool,
    now: Millis,
    tenant: &NewTenant,
    key: &NewApiKey,
) -> StoreResult<Tenant> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO tenants (id, name, rpm_limit, concurrency_limit, created_at, burst)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&tenant.id)
    .bind(&tenant.name)
    .bind(limit_in(tenant.rpm_limit, "rpm_limit")?)
    .bind(limit_in(tenant.concurrency_limit, "concurrency_limit")?)
    .bind(now)
    .bind(burst_in(tenant.burst)?)
    .execute(&mut *tx)
    .await?;
    api_key_insert(&mut tx, now, &tenant.id, key).await?;
    tx.commit().await?;
    Ok(Tenant {
        id: tenant.id.clone(),
        name: tenant.name.clone(),
        rpm_limit: tenant.rpm_limit,
        concurrency_limit: tenant.concurrency_limit,
        burst: tenant.burst,
        created_at: now,
    })
}

pub async fn list(pool: &PgPool) -> StoreResult<Vec<Tenant>> {
    let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY created_at, id");
    let rows: Vec<TenantRow> = sqlx::query_as(&sql).fetch_all(pool).await?;
    rows.into_iter().map(Tenant::try_from).collect()
}

/// Inserts the key only if the tenant exists; `NotFound` otherwise.
pub(super) async fn api_key_insert(
    conn: &mut sqlx::PgConnection,
    now: Millis,
    tenant_id: &str,
    key: &NewApiKey,
) -> StoreResult<()> {
    let inserted = sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, key_hash, prefix, created_at)
         SELECT $1, id, $3, $4, $5 FROM tenants WHERE id = $2",
    )
    .bind(&key.id)
    .bind(tenant_id)
    .bind(&key.key_hash[..])
    .bind(&key.prefix)
    .bind(now)
    .execute(conn)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub async fn api_key_add(
    pool: &PgPool,
    now: Millis,
    tenant_id: &str,
    key: &NewApiKey,
) -> StoreResult<()> {
    let mut conn = pool.acquire().await?;
    api_key_insert(&mut conn, now, tenant_id, key).await
}

#[derive(FromRow)]
struct ApiKeyRow {
    #[sqlx(flatten)]
    tenant: TenantRow,
    key_hash: Vec<u8>,
}

pub async fn api_key_find(pool: &PgPool, key_hash: &[u8; 32]) -> StoreResult<Option<ApiKeyRecord>> {
    let found: Option<ApiKeyRow> = sqlx::query_as(
        "SELECT t.id, t.name, t.rpm_limit, t.concurrency_limit, t.created_at, t.burst, k.key_hash
         FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
         WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
    )
    .bind(&key_hash[..])
    .fetch_optional(pool)
    .await?;
    let Some(row) = found else {
        return Ok(None);
    };
    let Ok(key_hash) = <[u8; 32]>::try_from(row.key_hash) else {
        return Ok(None);
    };
    Ok(Some(ApiKeyRecord {
        key_hash,
        tenant: Tenant::try_from(row.tenant)?,
    }))
}

const PROVIDER_KEY_COLUMNS: &str = "id, provider, secret_sealed, fingerprint, rpm_limit, \
     concurrency_limit, endpoint, priority, project, enabled, created_at, last_error";

#[derive(FromRow)]
struct ProviderKeyRow {
    id: String,
    provider: String,
    secret_sealed: Vec<u8>,
    fingerprint: String,
    rpm_limit: i32,
    concurrency_limit: i32,
    endpoint: Option<String>,
    priority: i32,
    project: Option<String>,
    enabled: bool,
    created_at: Millis,
    last_error: Option<String>,
}

impl TryFrom<ProviderKeyRow> for ProviderKeyRecord {
    type Error = StoreError;

    fn try_from(r: ProviderKeyRow) -> StoreResult<ProviderKeyRecord> {
        Ok(ProviderKeyRecord {
            id: r.id,
            provider: r.provider,
            secret_sealed: r.secret_sealed,
            fingerprint: r.fingerprint,
            rpm_limit: limit(r.rpm_limit, "rpm_limit")?,
            concurrency_limit: limit(r.concurrency_limit, "concurrency_limit")?,
            endpoint: r.endpoint,
            priority: r.priority,
            project: r.project,
            enabled: r.enabled,
            created_at: r.created_at,
            last_error: r.last_error,
        })
    }
}

pub async fn provider_key_add(
    pool: &PgPool,
    now: Millis,
    key: &NewProviderKey,
) -> StoreResult<ProviderKeyRecord> {
    let sql = format!(
        "INSERT INTO provider_keys (id, provider, secret_sealed, fingerprint, rpm_limit,
             concurrency_limit, endpoint, priority, project, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         RETURNING {PROVIDER_KEY_COLUMNS}"
    );
    let row: ProviderKeyRow = sqlx::query_as(&sql)
        .bind(&key.id)
        .bind(&key.provider)
        .bind(&key.secret_sealed)
        .bind(&key.fingerprint)
        .bind(limit_in(key.rpm_limit, "rpm_limit")?)
        .bind(limit_in(key.concurrency_limit, "concurrency_limit")?)
        .bind(&key.endpoint)
        .bind(key.priority)
        .bind(&key.project)
        .bind(now)
        .fetch_one(pool)
        .await?;
    row.try_into()
}

pub async fn provider_key_list(pool: &PgPool) -> StoreResult<Vec<ProviderKeyRecord>> {
    let sql = format!(
        "SELECT {PROVIDER_KEY_COLUMNS} FROM provider_keys
         ORDER BY provider, priority DESC, created_at"
    );
    let rows: Vec<ProviderKeyRow> = sqlx::query_as(&sql).fetch_all(pool).await?;
    rows.into_iter().map(ProviderKeyRecord::try_from).collect()
}

pub async fn provider_key_set_enabled(
    pool: &PgPool,
    id: &str,
    enabled: bool,
    last_error: Option<&str>,
) -> StoreResult<()> {
    let changed =
        sqlx::query("UPDATE provider_keys SET enabled = $2, last_error = $3 WHERE id = $1")
            .bind(id)
            .bind(enabled)
            .bind(last_error)
            .execute(pool)
            .await?
            .rows_affected();
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub async fn get(pool: &PgPool, tenant_id: &str) -> StoreResult<Option<Tenant>> {
    let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1");
    let row: Option<TenantRow> = sqlx::query_as(&sql)
        .bind(tenant_id)
        .fetch_optional(pool)
        .await?;
    row.map(Tenant::try_from).transpose()
}

pub async fn update_limits(
    pool: &PgPool,
    tenant_id: &str,
    rpm_limit: u32,
    concurrency_limit: u32,
    burst: Option<u32>,
) -> StoreResult<Tenant> {
    let sql = format!(
        "UPDATE tenants SET rpm_limit = $2, concurrency_limit = $3, burst = $4 WHERE id = $1
         RETURNING {TENANT_COLUMNS}"
    );
    let row: Option<TenantRow> = sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(limit_in(rpm_limit, "rpm_limit")?)
        .bind(limit_in(concurrency_limit, "concurrency_limit")?)
        .bind(burst_in(burst)?)
        .fetch_optional(pool)
        .await?;
    row.map(Tenant::try_from)
        .transpose()?
        .ok_or(StoreError::NotFound)
}
