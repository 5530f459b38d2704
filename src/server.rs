//! Runs the roles of one process (HTTP API, worker, maintenance, webhook dispatcher) until a
//! stop signal, so the binary and the tests start Easel the same way.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::jobs::maintenance;
use crate::jobs::worker::{Worker, WorkerDeps};
use crate::providers::probe::probe_key;
use crate::webhooks::dispatcher::Dispatcher;

/// Which parts a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub api: bool,
    pub worker: bool,
}

impl Roles {
    pub const ALL: Roles = Roles {
        api: true,
        worker: true,
    };
}

/// Starts the roles; returns when all of them have stopped after `stop` fired.
pub async fn run(app: App, roles: Roles, listener: Option<TcpListener>, stop: CancellationToken) {
    let mut tasks = JoinSet::new();
    if roles.worker {
        let deps = WorkerDeps::from_app(&app);
        tasks.spawn(Worker::new(deps).run(stop.clone()));
        tasks.spawn(maintenance::run(
            app.store.clone(),
            Duration::from_millis(app.config.worker.maintenance_ms),
            Duration::from_secs(app.config.server.idempotency_ttl_hours * 3600),
            app.wake.clone(),
            app.events.clone(),
            stop.clone(),
        ));
        // Beside the job workers, with its own slots: a slow receiver never holds a job.
        match Dispatcher::from_app(&app) {
            Ok(dispatcher) => {
                tasks.spawn(dispatcher.run(stop.clone()));
            }
            Err(e) => tracing::error!(error = %e, "webhook dispatcher not started"),
        }
    }
    if roles.worker {
        tasks.spawn(keep_keys_fresh(app.clone(), stop.clone()));
    }
    if let (true, Some(listener)) = (roles.api, listener) {
        let router = crate::api::router(app.clone());
        let shutdown = stop.clone();
        let events = app.events.clone();
        tasks.spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    shutdown.cancelled().await;
                    // Live event streams never end by themselves; this closes them.
                    events.close();
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Re-reads provider keys now and then (so `add-provider-key` needs no restart) and re-tests
/// keys an upstream rejected, enabling those that work again.
async fn keep_keys_fresh(app: App, stop: CancellationToken) {
    let refresh = Duration::from_millis(app.config.worker.key_refresh_ms.max(100));
    let probe_every = Duration::from_secs(app.config.worker.key_probe_secs.max(1));
    let mut last_probe = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(refresh) => {}
            _ = stop.cancelled() => return,
        }
        if let Err(e) = app.keys.load().await {
            tracing::warn!(error = %e, "provider key refresh failed");
        }
        if last_probe.elapsed() < probe_every {
            continue;
        }
        last_probe = tokio::time::Instant::now();
        let base = app.config.providers.gemini.base_url.clone();
        let probed = app
            .keys
            .probe_disabled(|key| {
                let (key, base) = (key.clone(), base.clone());
                async move { probe_key(&key, &base).await.is_ok() }
            })
            .await;
        match probed {
            Ok(reports) => {
                for r in reports.iter().filter(|r| r.enabled) {
                    tracing::info!(key = %r.key_id, "provider key works again; re-enabled");
                }
            }
            Err(e) => tracing::warn!(error = %e, "provider key probe failed"),
        }
    }
}
