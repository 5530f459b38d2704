//! Runs the roles of one process (HTTP API, worker, maintenance, webhook dispatcher) until a
//! stop signal, so the binary and the tests start Easel the same way. Whatever its roles, a
//! running process records itself in the store's `nodes` table every [`HEARTBEAT_EVERY`] and
//! counts the live nodes ([`heartbeat_once`]): the count every limit is divided by when the
//! shared limiter is unreachable (`limits::failover`, which also says how long a node counts
//! as live, [`NODE_TTL`]). Part of the composition root: each role gets its parts from [`App`]
//! ([`App::worker_deps`], [`App::webhook_dispatcher`]), so no role knows `App`.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::base::clock::now_millis;
use crate::jobs::maintenance;
use crate::jobs::worker::Worker;
use crate::keypool::probe::probe_disabled_keys;
use crate::limits::{LiveNodes, HEARTBEAT_EVERY, NODE_TTL};
use crate::store::{Store, StoreResult};

/// Nodes silent for this long are deleted from the table.
const NODE_FORGET: Duration = Duration::from_secs(24 * 3600);
/// How often the forgetting runs.
const NODE_PURGE_EVERY: Duration = Duration::from_secs(3600);

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

    /// The role recorded in the `nodes` table.
    pub fn name(&self) -> &'static str {
        match (self.api, self.worker) {
            (true, true) => "api+worker",
            (true, false) => "api",
            (false, true) => "worker",
            (false, false) => "none",
        }
    }
}

/// Records `node_id` as alive now and sets `live` to the nodes heard from within
/// [`NODE_TTL`] (this one included). Returns that count.
pub async fn heartbeat_once(
    store: &dyn Store,
    node_id: &str,
    role: &str,
    live: &LiveNodes,
) -> StoreResult<u32> {
    let now = now_millis();
    store.node_heartbeat(node_id, role, now).await?;
    let count = store.nodes_live(now - NODE_TTL.as_millis() as i64).await?;
    live.set(count);
    Ok(count)
}

/// Heartbeats until `stop`; logs when the live count changes. A store that cannot be reached
/// leaves the last count in place (and says so).
async fn heartbeat(app: App, role: &'static str, stop: CancellationToken) {
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_count = None;
    let mut last_purge = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        match heartbeat_once(app.store.as_ref(), &app.node_id, role, &app.live_nodes).await {
            Ok(count) if last_count != Some(count) => {
                tracing::info!(node = %app.node_id, live_nodes = count, "live nodes");
                last_count = Some(count);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(
                error = %e,
                live_nodes = app.live_nodes.get(),
                "node heartbeat failed; keeping the last live node count"
            ),
        }
        if last_purge.elapsed() >= NODE_PURGE_EVERY {
            last_purge = tokio::time::Instant::now();
            let before = now_millis() - NODE_FORGET.as_millis() as i64;
            if let Err(e) = app.store.nodes_purge(before).await {
                tracing::warn!(error = %e, "purging old nodes failed");
            }
        }
    }
}

/// Starts the roles; returns when all of them have stopped after `stop` fired.
pub async fn run(
    mut app: App,
    roles: Roles,
    listener: Option<TcpListener>,
    stop: CancellationToken,
) {
    let mut tasks = JoinSet::new();
    let worker = roles.worker.then(|| Worker::new(app.worker_deps()));
    if let Some(worker) = worker
        .as_ref()
        .filter(|_| app.config.worker.dispatch_on_submit)
    {
        app.direct_start = Some(worker.direct_start());
    }
    tasks.spawn(heartbeat(app.clone(), roles.name(), stop.clone()));
    if let Some(worker) = worker {
        tasks.spawn(worker.run(stop.clone()));
        tasks.spawn(maintenance::run(
            app.store.clone(),
            Duration::from_millis(app.config.worker.maintenance_ms),
            maintenance::Retention {
                idempotency: Duration::from_secs(app.config.server.idempotency_ttl_hours * 3600),
                webhook_deliveries: app.config.webhooks.retention(),
            },
            app.wake.clone(),
            app.events.clone(),
            stop.clone(),
        ));
        tasks.spawn(crate::uploads::run_collector(
            app.images.clone(),
            // Deletes happen inline; this pass only retries failures and crash leftovers.
            Duration::from_secs(60),
            stop.clone(),
        ));
        tasks.spawn(crate::jobs::followups::run(
            app.store.clone(),
            app.job_followers(),
            app.events.subscribe(),
            stop.clone(),
        ));
        // Beside the job workers, with its own slots: a slow receiver never holds a job.
        match app.webhook_dispatcher() {
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
            let served = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
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
    // A clean stop takes the node out of the live count at once: a restart within NODE_TTL
    // would otherwise count two nodes and halve every limit's share during a Redis outage.
    if let Err(e) = app.store.node_remove(&app.node_id).await {
        tracing::warn!(error = %e, "could not remove this node's heartbeat; it ages out");
    }
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
        match probe_disabled_keys(&app.keys, &app.providers).await {
            Ok(reports) => {
                for r in reports.iter().filter(|r| r.enabled) {
                    tracing::info!(key = %r.key_id, "provider key works again; re-enabled");
                }
            }
            Err(e) => tracing::warn!(error = %e, "provider key probe failed"),
        }
    }
}
