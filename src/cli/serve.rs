//! `easel serve`: builds the app and runs the roles asked for until SIGINT/SIGTERM.

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::Role;
use crate::app::{ensure_default_tenant, App};
use crate::config::Config;
use crate::server::{self, Roles};

pub async fn serve(config: Config, role: Role) -> anyhow::Result<()> {
    // The handlers are installed before anything is announced: a signal handler that is
    // only registered when a spawned task first runs leaves a window after "listening" in
    // which SIGTERM still kills the process outright.
    let stop = CancellationToken::new();
    tokio::spawn(wait_for_signal(Signals::install(), stop.clone()));
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
    if let Some(port) = app.config.server.ops_port {
        let addr = format!("{}:{port}", app.config.server.host);
        let ops = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (server.ops_port)"))?;
        println!("Health and metrics on http://{addr}");
        let (router, stop) = (crate::api::ops_router(app.clone()), stop.clone());
        tokio::spawn(async move {
            let served = axum::serve(ops, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "ops HTTP server failed");
            }
        });
    }
    server::run(app, roles, listener, stop).await;
    Ok(())
}

/// SIGINT and SIGTERM listeners, registered when made (not when first polled).
struct Signals {
    #[cfg(unix)]
    unix: std::io::Result<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let unix = signal(SignalKind::interrupt())
                .and_then(|int| Ok((int, signal(SignalKind::terminate())?)));
            Signals { unix }
        }
        #[cfg(not(unix))]
        Signals {}
    }
}

async fn wait_for_signal(signals: Signals, stop: CancellationToken) {
    #[cfg(unix)]
    match signals.unix {
        Ok((mut int, mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGINT/SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    #[cfg(not(unix))]
    {
        let Signals {} = signals;
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutting down: no new claims, running jobs get the grace period");
    stop.cancel();
}
