//! What the store conformance suites (`tests/store.rs`, `tests/store_users.rs`) share to
//! reach PostgreSQL: a fresh schema per test when `EASEL_TEST_PG_URL` is set, small pools, and
//! the sweep of schemas old runs left. Included with `#[path]`, as each suite is its own crate.
#![allow(dead_code)]

use std::sync::Arc;

use easel::base::clock::{now_millis, ManualWallClock, Millis};
use easel::store::postgres::{PgSettings, PgStore};
use easel::store::sqlite::SqliteStore;
use easel::store::Store;

const HOUR: Millis = 3_600_000;

/// Small pools: tests run in parallel, one pool (plus a listener) each, on one server.
pub fn pg_settings() -> PgSettings {
    PgSettings {
        max_connections: 5,
        ..PgSettings::default()
    }
}

fn pg_url() -> Option<String> {
    std::env::var("EASEL_TEST_PG_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

const PG_SCHEMA_PREFIX: &str = "easel_test_";

/// A new schema name for one test. The first call in a process also drops the schemas that
/// earlier runs left behind (named by a ULID, so their age is known): those over an hour old.
pub async fn pg_schema() -> Option<(String, String)> {
    static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let url = pg_url()?;
    SWEPT
        .get_or_init(|| async {
            if let Err(e) = drop_stale_schemas(&url).await {
                eprintln!("could not drop old test schemas: {e}");
            }
        })
        .await;
    Some((url, format!("{PG_SCHEMA_PREFIX}{}", ulid())))
}

async fn drop_stale_schemas(url: &str) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let names: Vec<String> =
        sqlx::query_scalar("SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)")
            .bind(PG_SCHEMA_PREFIX)
            .fetch_all(&mut conn)
            .await?;
    let hour_ago = now_millis() - HOUR;
    for name in names {
        let stale = name
            .strip_prefix(PG_SCHEMA_PREFIX)
            .and_then(|id| ulid::Ulid::from_string(&id.to_uppercase()).ok())
            .is_some_and(|id| (id.timestamp_ms() as Millis) < hour_ago);
        if stale {
            sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                .execute(&mut conn)
                .await?;
        }
    }
    conn.close().await
}

fn ulid() -> String {
    ulid::Ulid::new().to_string().to_lowercase()
}

/// One backend under test, with a fresh, empty database and a clock that moves only when told.
pub struct ClockedStore {
    pub store: Arc<dyn Store>,
    pub clock: Arc<ManualWallClock>,
    /// Keeps the SQLite folder alive for the test's duration.
    pub _dir: Option<tempfile::TempDir>,
}

impl ClockedStore {
    pub async fn sqlite() -> Option<ClockedStore> {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(ManualWallClock::new(now_millis()));
        let store = SqliteStore::open_with_clock(&dir.path().join("easel.db"), clock.clone())
            .expect("open sqlite");
        Some(ClockedStore {
            store: Arc::new(store),
            clock,
            _dir: Some(dir),
        })
    }

    /// `None` (the suite skips) without `EASEL_TEST_PG_URL`.
    pub async fn postgres() -> Option<ClockedStore> {
        let (url, schema) = pg_schema().await?;
        let clock = Arc::new(ManualWallClock::new(now_millis()));
        let store = PgStore::connect_with_schema(&url, &schema, &pg_settings())
            .await
            .expect("connect to EASEL_TEST_PG_URL")
            .with_clock(clock.clone());
        Some(ClockedStore {
            store: Arc::new(store),
            clock,
            _dir: None,
        })
    }
}
