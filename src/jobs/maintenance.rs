//! The periodic pass that keeps the queue honest: requeues jobs whose worker died (expired
//! lease), cancels jobs past their `Cancel-After`, fails jobs past their deadline, and purges
//! old idempotency records. Safe to run in every process at once: each pass is one
//! transaction guarded by the job's status and lease.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::model::now_millis;
use crate::events::{Change, EventBus};
use crate::store::Store;

pub async fn run(
    store: Arc<dyn Store>,
    every: Duration,
    idempotency_ttl: Duration,
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
        if ticks % 600 == 0 {
            let before = now_millis() - idempotency_ttl.as_millis() as i64;
            if let Err(e) = store.idempotency_purge(before).await {
                tracing::warn!(error = %e, "idempotency purge failed");
            }
        }
    }
}
