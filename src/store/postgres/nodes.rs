//! Node heartbeats on PostgreSQL: one row per Easel process, its `last_seen` moved forward by
//! every heartbeat.

use sqlx::PgPool;

use crate::base::clock::Millis;
use crate::store::StoreResult;

/// Records `node_id` as alive at `now`; a heartbeat older than the one stored never moves
/// `last_seen` back. `started_at` is the first heartbeat's time.
pub async fn heartbeat(pool: &PgPool, node_id: &str, role: &str, now: Millis) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO nodes (id, role, started_at, last_seen) VALUES ($1, $2, $3, $3)
         ON CONFLICT (id) DO UPDATE
         SET role = EXCLUDED.role, last_seen = GREATEST(nodes.last_seen, EXCLUDED.last_seen)",
    )
    .bind(node_id)
    .bind(role)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn live(pool: &PgPool, since: Millis) -> StoreResult<u32> {
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM nodes WHERE last_seen >= $1")
        .bind(since)
        .fetch_one(pool)
        .await?;
    Ok(u32::try_from(count).unwrap_or(u32::MAX))
}

pub async fn purge(pool: &PgPool, before: Millis) -> StoreResult<u64> {
    Ok(sqlx::query("DELETE FROM nodes WHERE last_seen < $1")
        .bind(before)
        .execute(pool)
        .await?
        .rows_affected())
}

pub async fn remove(pool: &PgPool, node_id: &str) -> StoreResult<bool> {
    let deleted = sqlx::query("DELETE FROM nodes WHERE id = $1")
        .bind(node_id)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(deleted > 0)
}
