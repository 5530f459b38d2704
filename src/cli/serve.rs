//! `easel serve`: builds the app and runs the roles asked for until SIGINT/SIGTERM.

use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::Role;
use crate::app::{ensure_default_tenant, App};
use crate::config::Config;
use crate::jobs::maintenance;
use crate::jobs::worker::{Worker, WorkerDeps};

pub async fn serve(config: Config, role: Role) -> anyhow::Result<()> {
    let app = App::build(config).await?;
    if let Some(created) = ensure_default_tenant(&app).await? {
        if app.config.auth.test_api_key.is_some() {
            println!(
                "Created tenant 'default' ({}) with TEST_API_KEY.",
                created.tenant.id
            );
        } else {
            println!("Created tenant 'default' ({}).", created.tenant.id);
            println!("API key (shown once, store it now): {}", created.api_key);
        }
    }
    let stop = CancellationToken::new();
    tokio::spawn(wait_for_signal(stop.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    if role != Role::Api {
        let deps = WorkerDeps {
            store: app.store.clone(),
            objects: app.objects.clone(),
            providers: app.providers.clone(),
            config: app.config.worker.clone(),
            wake: app.wake.clone(),
        };
        tasks.spawn(Worker::new(deps).run(stop.clone()));
        tasks.spawn(maintenance::run(
            app.store.clone(),
            Duration::from_secs(1),
            Duration::from_secs(app.config.server.idempotency_ttl_hours * 3600),
            app.wake.clone(),
            stop.clone(),
        ));
    }
    if role != Role::Worker {
        let addr = format!("{}:{}", app.config.server.host, app.config.server.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        println!("Easel listening on http://{addr} (role: {role:?})");
        let router = crate::api::router(app.clone());
        let shutdown = stop.clone();
        tasks.spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
    } else {
        println!("Easel worker running (role: worker)");
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn wait_for_signal(stop: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    stop.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: no new claims, running jobs get the grace period");
    stop.cancel();
}
