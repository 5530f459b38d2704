//! [`RedisLimiter`]: limits shared by every node, in Redis.
//!
//! Each operation is one Lua script (run with EVALSHA, loaded on first use), so it is atomic
//! however many nodes call at once, and takes the time from Redis `TIME` inside the script, so
//! the nodes' own clocks never matter. Rates are one string per key (`<prefix>rate:<key>`,
//! the GCRA `tat` in microseconds, expiring when the key is idle again); permits are one sorted
//! set per key (`<prefix>permit:<key>`, member = permit id, score = lease end in microseconds).
//!
//! On Redis Cluster every key of one permit must hash to one slot: put a hash tag in the
//! prefix (e.g. `{easel}:`).

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use super::gcra::{Gcra, Step};
use super::{
    lease_micros, merge_specs, new_permit_id, LimitError, Limiter, Permit, PermitSpec,
    RateDecision, RateQuota,
};

/// The key prefix used unless configured otherwise.
pub const DEFAULT_PREFIX: &str = "easel:";

struct Scripts {
    rate: Script,
    permits_acquire: Script,
    permit_renew: Script,
    permit_release: Script,
    in_use: Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            rate: Script::new(include_str!("lua/rate.lua")),
            permits_acquire: Script::new(include_str!("lua/permits_acquire.lua")),
            permit_renew: Script::new(include_str!("lua/permit_renew.lua")),
            permit_release: Script::new(include_str!("lua/permit_release.lua")),
            in_use: Script::new(include_str!("lua/in_use.lua")),
        }
    }
}

/// Limits for many nodes, kept in one Redis.
pub struct RedisLimiter {
    conn: ConnectionManager,
    prefix: String,
    scripts: Scripts,
}

fn unavailable(e: redis::RedisError) -> LimitError {
    LimitError::Unavailable(e.to_string())
}

impl RedisLimiter {
    /// Connects to `url` (`redis://host:port/db`) with the redis crate's default timeouts
    /// (a response that takes longer than 500 ms is an error, not a hang).
    pub async fn connect(url: &str, prefix: impl Into<String>) -> Result<RedisLimiter, LimitError> {
        let client =
            redis::Client::open(url).map_err(|e| LimitError::Invalid(format!("redis url: {e}")))?;
        let conn = client.get_connection_manager().await.map_err(unavailable)?;
        Ok(RedisLimiter::new(conn, prefix))
    }

    /// A limiter that connects on first use rather than now, so it can be made while Redis is
    /// down. Every connection attempt and every answer is bounded by `timeout`, and a lost
    /// connection is retried once after ~50 ms rather than through the redis crate's default
    /// backoff (six tries, up to ~6 s during which every call waits): the
    /// [`FailoverLimiter`](super::FailoverLimiter) wants to learn of an outage quickly and
    /// re-probes by itself.
    pub fn lazy(
        url: &str,
        prefix: impl Into<String>,
        timeout: Duration,
    ) -> Result<RedisLimiter, LimitError> {
        let client =
            redis::Client::open(url).map_err(|e| LimitError::Invalid(format!("redis url: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(100))
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(unavailable)?;
        Ok(RedisLimiter::new(conn, prefix))
    }

    /// Uses an existing connection (e.g. with tuned timeouts); it reconnects by itself.
    pub fn new(conn: ConnectionManager, prefix: impl Into<String>) -> RedisLimiter {
        RedisLimiter {
            conn,
            prefix: prefix.into(),
            scripts: Scripts::new(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// One `PING`: whether Redis answers now (also makes the connection if there is none).
    pub async fn ping(&self) -> Result<(), LimitError> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    fn rate_key(&self, key: &str) -> String {
        format!("{}rate:{key}", self.prefix)
    }

    fn permit_key(&self, key: &str) -> String {
        format!("{}permit:{key}", self.prefix)
    }

    async fn rate(
        &self,
        key: &str,
        gcra: Gcra,
        cost: u32,
        mode: &str,
    ) -> Result<RateDecision, LimitError> {
        let mut conn = self.conn.clone();
        let (allowed, tat, now): (i64, i64, i64) = self
            .scripts
            .rate
            .key(self.rate_key(key))
            .arg(gcra.interval_micros())
            .arg(gcra.burst())
            .arg(cost)
            .arg(mode)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let step = Step {
            allowed: allowed == 1,
            tat: u64::try_from(tat).unwrap_or(0),
            write: false,
        };
        Ok(gcra.decision(u64::try_from(now).unwrap_or(0), step, cost))
    }
}

#[async_trait]
impl Limiter for RedisLimiter {
    async fn rate_acquire(
        &self,
        key: &str,
        quota: RateQuota,
        cost: u32,
    ) -> Result<RateDecision, LimitError> {
        let gcra = Gcra::new(quota)?;
        gcra.check_cost(cost)?;
        self.rate(key, gcra, cost, "acquire").await
    }

    async fn rate_peek(&self, key: &str, quota: RateQuota) -> Result<RateDecision, LimitError> {
        let gcra = Gcra::new(quota)?;
        self.rate(key, gcra, 1, "peek").await
    }

    async fn permits_acquire(
        &self,
        specs: &[PermitSpec],
        lease: Duration,
    ) -> Result<Option<Permit>, LimitError> {
        let lease = lease_micros(lease)?;
        let specs = merge_specs(specs);
        let permit = Permit {
            id: new_permit_id(),
            keys: specs.iter().map(|(key, _)| key.clone()).collect(),
        };
        if specs.is_empty() {
            return Ok(Some(permit));
        }
        let mut invocation = self.scripts.permits_acquire.prepare_invoke();
        invocation.arg(&permit.id).arg(lease);
        for (key, limit) in &specs {
            invocation.key(self.permit_key(key)).arg(*limit);
        }
        let mut conn = self.conn.clone();
        let taken: i64 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok((taken == 1).then_some(permit))
    }

    async fn permit_renew(&self, permit: &Permit, lease: Duration) -> Result<bool, LimitError> {
        let lease = lease_micros(lease)?;
        if permit.keys.is_empty() {
            return Ok(true);
        }
        let mut invocation = self.scripts.permit_renew.prepare_invoke();
        invocation.arg(&permit.id).arg(lease);
        for key in &permit.keys {
            invocation.key(self.permit_key(key));
        }
        let mut conn = self.conn.clone();
        let renewed: i64 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(renewed == 1)
    }

    async fn permit_release(&self, permit: &Permit) -> Result<(), LimitError> {
        if permit.keys.is_empty() {
            return Ok(());
        }
        let mut invocation = self.scripts.permit_release.prepare_invoke();
        invocation.arg(&permit.id);
        for key in &permit.keys {
            invocation.key(self.permit_key(key));
        }
        let mut conn = self.conn.clone();
        let _: i64 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn in_use(&self, key: &str) -> Result<u32, LimitError> {
        let mut conn = self.conn.clone();
        let live: i64 = self
            .scripts
            .in_use
            .key(self.permit_key(key))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(u32::try_from(live).unwrap_or(u32::MAX))
    }
}
