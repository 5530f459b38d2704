//! `easel serve`: builds the app and runs the roles asked for until SIGINT/SIGTERM.

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::Role;
use crate::app::{ensure_default_tenant, App};
use crate::config::Config;
use crate::server::{self, Roles};

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
    let roles = Roles {
        api: role != Role::Worker,
        worker: role != Role::Api,
    };
    let listener = if roles.api {
        let addr = format!("{}:{}", app.config.server.host, app.config.server.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        println!("Easel listening on http://{addr} (role: {role:?})");
        Some(listener)
    } else {
        println!("Easel worker running (role: worker)");
        None
    };
    server::run(app, roles, listener, stop).await;
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
