//! Node heartbeats on SQLite: one row per Easel process, its `last_seen` moved forward by
//! every heartbeat.

use rusqlite::{params, Connection};

use crate::base::clock::Millis;
use crate::store::StoreResult;

/// Records `node_id` as alive at `now`; a heartbeat older than the one stored never moves
/// `last_seen` back. `started_at` is the first heartbeat's time.
pub fn heartbeat(conn: &Connection, node_id: &str, role: &str, now: Millis) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO nodes (id, role, started_at, last_seen) VALUES (?1, ?2, ?3, ?3)
         ON CONFLICT (id) DO UPDATE
         SET role = excluded.role, last_seen = MAX(nodes.last_seen, excluded.last_seen)",
    )?
    .execute(params![node_id, role, now])?;
    Ok(())
}

pub fn live(conn: &Connection, since: Millis) -> StoreResult<u32> {
    let count: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM nodes WHERE last_seen >= ?1")?
        .query_row([since], |r| r.get(0))?;
    Ok(u32::try_from(count).unwrap_or(u32::MAX))
}

pub fn purge(conn: &Connection, before: Millis) -> StoreResult<u64> {
    let deleted = conn
        .prepare_cached("DELETE FROM nodes WHERE last_seen < ?1")?
        .execute([before])?;
    Ok(deleted as u64)
}

pub fn remove(conn: &Connection, node_id: &str) -> StoreResult<bool> {
    let deleted = conn
        .prepare_cached("DELETE FROM nodes WHERE id = ?1")?
        .execute([node_id])?;
    Ok(deleted > 0)
}
