//! Runs the roles of one process (HTTP API, worker, maintenance) until a stop signal, so the
//! binary and the tests start Easel the same way.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::jobs::maintenance;
use crate::jobs::worker::{Worker, WorkerDeps};

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
