//! The periodic pass that keeps the queue honest: requeues jobs whose worker died (expired
//! lease), cancels jobs past their `Cancel-After`, fails jobs past their deadline, and purges
//! old idempotency records and webhook deliveries that ended longer ago than their retention
//! (never a pending one). Safe to run in every process at once: each pass is one transaction
//! guarded by the job's status and lease, and a purge deletes what is already past keeping.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::base::clock::now_millis;
use crate::events::{Change, EventBus};
use crate::store::Store;

/// Purges run every this many passes (10 minutes at the default `worker.maintenance_ms`).
const PURGE_EVERY_PASSES: u64 = 600;

/// Webhook deliveries deleted per store call: a batch never holds the (SQLite) writer long,
/// and other writes go in between batches.
const DELIVERY_PURGE_BATCH: u32 = 1000;

/// How long purged records are kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub idempotency: Duration,
    /// Webhook deliveries, from when they ended.
    pub webhook_deliveries: Duration,
}

pub async fn run(
    store: Arc<dyn Store>,
    every: Duration,
    retention: Retention,
    wake: Arc<Notify>,
    events: Arc<dyn EventBus>,
    stop: CancellationToken,
) {
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let maintained = store.job_maintain(now_millis()).await;
        if let Ok(d) = &maintained {
            crate::telemetry::jobs_recovered(d.rescued, d.expired, d.canceled);
        }
        if matches!(&maintained, Ok(d) if d.rescued + d.canceled + d.expired > 0) {
            events.publish(Change::anyone());
        }
        match maintained {
            Ok(done) if done.rescued > 0 => {
                tracing::info!(
                    rescued = done.rescued,
                    canceled = done.canceled,
                    expired = done.expired,
                    "maintenance"
                );
                // Rescued jobs are runnable now.
                wake.notify_waiters();
            }
            Ok(done) if done.canceled + done.expired > 0 => {
                tracing::info!(
                    canceled = done.canceled,
                    expired = done.expired,
                    "maintenance"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "maintenance pass failed"),
        }
        ticks += 1;
        if ticks % PURGE_EVERY_PASSES == 0 {
            let before = now_millis() - retention.idempotency.as_millis() as i64;
            if let Err(e) = store.idempotency_purge(before).await {
                tracing::warn!(error = %e, "idempotency purge failed");
            }
            purge_deliveries(store.as_ref(), retention.webhook_deliveries, &stop).await;
        }
    }
}

/// Deletes the webhook deliveries that ended longer than `retention` ago, a batch at a time.
async fn purge_deliveries(store: &dyn Store, retention: Duration, stop: &CancellationToken) -> u64 {
    let before =
        now_millis().saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
    let mut purged = 0;
    loop {
        match store.webhook_purge(before, DELIVERY_PURGE_BATCH).await {
            Ok(n) => {
                purged += n;
                if n < u64::from(DELIVERY_PURGE_BATCH) || stop.is_cancelled() {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "webhook delivery purge failed");
                break;
            }
        }
        tokio::task::yield_now().await;
    }
    if purged > 0 {
        tracing::info!(purged, "webhook deliveries past their retention deleted");
    }
    purged
}
