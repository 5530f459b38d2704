//! Crash recovery end to end: a worker process killed mid-job, a late write from a lost
//! lease, and a graceful shutdown that gives running jobs back to the queue.

mod common;

use common::ChildGuard;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use easel::app::App;
use easel::base::clock::now_millis;
use easel::base::job::{Finish, Job, JobStatus, NewJob};
use easel::config::Config;
use easel::jobs::worker::{run_claimed, WorkerDeps};
use easel::server::{self, Roles};
use easel::store::{Store, StoreError};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// `easel serve --role worker` on `dir`, with a hanging local provider and a short lease.
fn spawn_worker_process(dir: &Path) -> ChildGuard {
    common::spawn_worker_process(
        dir,
        "worker-process.log",
        &[
            ("EASEL_WORKER__LEASE_MS", "500"),
            ("EASEL_WORKER__HEARTBEAT_MS", "100"),
            ("EASEL_WORKER__POLL_MS", "50"),
            ("EASEL_WORKER__MAINTENANCE_MS", "100"),
            ("EASEL_PROVIDERS__LOCAL__DELAY_MS", "600000"),
            ("EASEL_PROVIDERS__LOCAL__DRAFT_SIZE", "16"),
        ],
    )
}

/// A worker-only app in this process on `dir`, its local renderer instant.
async fn start_worker(dir: &Path) -> (App, CancellationToken, tokio::task::JoinHandle<()>) {
    let mut config: Config = common::test_config(dir);
    config.worker.lease_ms = 500;
    config.worker.heartbeat_ms = 100;
    config.providers.local.delay_ms = 0;
    let app = App::build(config).await.expect("build worker app");
    let stop = CancellationToken::new();
    let roles = Roles {
        api: false,
        worker: true,
    };
    let handle = tokio::spawn(server::run(app.clone(), roles, None, stop.clone()));
    (app, stop, handle)
}

/// Polls the store until the job satisfies `done`; panics with the last state after `timeout`.
async fn wait_job(
    store: &dyn Store,
    tenant_id: &str,
    job_id: &str,
    timeout: Duration,
    done: impl Fn(&Job) -> bool,
) -> Job {
    let started = Instant::now();
    loop {
        let job = store
            .job_get(tenant_id, job_id)
            .await
            .expect("job_get")
            .expect("job exists");
        if done(&job) {
            return job;
        }
        assert!(
            started.elapsed() < timeout,
            "job {job_id} still {} after {timeout:?}: {job:?}",
            job.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn event_trail(store: &dyn Store, job_id: &str) -> Vec<(JobStatus, u32, Option<String>)> {
    store
        .job_events(job_id)
        .await
        .expect("events")
        .into_iter()
        .map(|e| (e.status, e.attempt, e.error_code))
        .collect()
}

async fn submit(app: &common::TestApp) -> String {
    let response = app
        .submit(json!({"prompt": "a red fox", "mode": "draft"}))
        .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.expect("json");
    body["jobId"].as_str().expect("jobId").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_loses_its_job_to_a_fresh_worker_which_finishes_it_once() {
    // This process serves the API only; the worker is a child process on the same database.
    let api = common::spawn_app_with(
        |_| {},
        Roles {
            api: true,
            worker: false,
        },
    )
    .await;
    let dir = api.dir.path().to_path_buf();
    let mut child = spawn_worker_process(&dir);
    let job_id = submit(&api).await;
    let running = api
        .wait_for(&job_id, &["RUNNING"], Duration::from_secs(15))
        .await;
    assert_eq!(running["attempts"], 1);
    // The heartbeat keeps the 500 ms lease alive: well past two leases, the child's own
    // maintenance pass has not rescued the job.
    let store = api.app.store.as_ref();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        event_trail(store, &job_id).await,
        vec![(JobStatus::Queued, 0, None), (JobStatus::Running, 1, None)],
        "worker log: {}",
        std::fs::read_to_string(dir.join("worker-process.log")).unwrap_or_default()
    );

    // SIGKILL: no release, no final write; only the lease can tell.
    child.0.kill().expect("kill worker");
    let status = child.0.wait().expect("wait worker");
    assert!(!status.success(), "killed, not exited: {status:?}");
    let (_, stop, handle) = start_worker(&dir).await;
    let done = api
        .wait_for(&job_id, &["SUCCEEDED", "FAILED"], Duration::from_secs(15))
        .await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_eq!(done["attempts"], 2);
    assert_eq!(done["resultUrls"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        event_trail(store, &job_id).await,
        vec![
            (JobStatus::Queued, 0, None),
            (JobStatus::Running, 1, None),
            (JobStatus::Retrying, 1, Some("WORKER_LOST".to_owned())),
            (JobStatus::Running, 2, None),
            (JobStatus::Succeeded, 2, None),
        ]
    );
    let image = api
        .http
        .get(done["resultUrls"][0].as_str().unwrap())
        .send()
        .await
        .expect("download");
    assert_eq!(image.status(), 200);
    stop.cancel();
    handle.await.expect("worker stopped");
    api.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_write_from_a_lost_lease_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = common::test_config(dir.path());
    config.worker.heartbeat_ms = 50;
    let app = App::build(config).await.expect("app");
    let store: Arc<dyn Store> = app.store.clone();
    let tenant = easel::app::create_tenant(store.as_ref(), "t", 600, 5, None)
        .await
        .expect("tenant")
        .tenant;
    let now = now_millis();
    let job_id = easel::base::job::new_job_id();
    store
        .job_submit(NewJob {
            id: job_id.clone(),
            tenant_id: tenant.id.clone(),
            prompt: "a heron".into(),
            mode: easel::base::job::Mode::Draft,
            input_image_url: None,
            params: Default::default(),
            provider: "local".into(),
            max_attempts: 3,
            created_at: now,
            cancel_at: None,
            deadline_at: now + 3_600_000,
            idempotency: None,
            webhook_url: None,
            charge: None,
            follow_up: None,
        })
        .await
        .expect("submit");
    let old = store
        .job_claim("wrk_old", 1, Duration::from_millis(1))
        .await
        .expect("claim")
        .pop()
        .expect("claimed");
    let rescued = store
        .job_maintain(now_millis() + 1000)
        .await
        .expect("maintain");
    assert_eq!(rescued.rescued, 1);
    let new = store
        .job_claim("wrk_new", 1, Duration::from_secs(600))
        .await
        .expect("claim")
        .pop()
        .expect("claimed again");
    assert!(new.fence > old.fence);
    let before = store.job_get(&tenant.id, &job_id).await.unwrap().unwrap();
    let events_before = store.job_events(&job_id).await.unwrap();
    assert_eq!((before.status, before.attempts), (JobStatus::Running, 2));

    // The old holder's result, written straight to the store...
    let late = store
        .job_finish(
            &job_id,
            old.fence,
            Finish::Succeeded {
                result_keys: vec!["late.png".into()],
                meta: None,
            },
        )
        .await;
    assert!(matches!(late, Err(StoreError::LeaseLost)), "{late:?}");
    // ...and through the worker's own attempt path, which runs the job and then reports.
    let deps = WorkerDeps {
        store: store.clone(),
        ..app.worker_deps()
    };
    tokio::time::timeout(
        Duration::from_secs(10),
        run_claimed(&deps, old, CancellationToken::new()),
    )
    .await
    .expect("the stale attempt ends");
    assert_eq!(
        store.job_get(&tenant.id, &job_id).await.unwrap(),
        Some(before)
    );
    assert_eq!(store.job_events(&job_id).await.unwrap(), events_before);

    // The current holder finishes normally.
    store
        .job_finish(
            &job_id,
            new.fence,
            Finish::Succeeded {
                result_keys: vec!["new.png".into()],
                meta: None,
            },
        )
        .await
        .expect("finish with the current fence");
    let job = store.job_get(&tenant.id, &job_id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Succeeded);
    assert_eq!(job.result_keys, vec!["new.png"]);
    let succeeded = event_trail(store.as_ref(), &job_id)
        .await
        .into_iter()
        .filter(|(s, _, _)| *s == JobStatus::Succeeded)
        .count();
    assert_eq!(succeeded, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_gives_a_running_job_back_to_the_queue() {
    let app = common::spawn_app_with(
        |c| {
            c.worker.shutdown_grace_secs = 1;
            c.worker.lease_ms = 2000;
            c.worker.heartbeat_ms = 100;
            c.providers.local.delay_ms = 600_000;
        },
        Roles::ALL,
    )
    .await;
    let job_id = submit(&app).await;
    app.wait_for(&job_id, &["RUNNING"], Duration::from_secs(10))
        .await;
    let store = app.app.store.clone();
    let tenant_id = app.tenant_id.clone();
    let dir = app.dir;
    let stopping = Instant::now();
    app.stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), app.handle)
        .await
        .expect("stops after the grace period")
        .expect("server task");
    let took = stopping.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "stopped after {took:?}, grace is 1 s"
    );
    let job = store.job_get(&tenant_id, &job_id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Retrying);
    assert_eq!(job.attempts, 0, "a released attempt does not count");
    assert_eq!(job.error_code.as_deref(), Some("WORKER_SHUTDOWN"));
    assert_eq!(
        event_trail(store.as_ref(), &job_id).await.last().cloned(),
        Some((JobStatus::Retrying, 0, Some("WORKER_SHUTDOWN".to_owned())))
    );

    // Not lost: the next worker on the same database runs it.
    let (_, stop, handle) = start_worker(dir.path()).await;
    let job = wait_job(
        store.as_ref(),
        &tenant_id,
        &job_id,
        Duration::from_secs(10),
        |j| j.status.is_terminal(),
    )
    .await;
    assert_eq!((job.status, job.attempts), (JobStatus::Succeeded, 1));
    stop.cancel();
    handle.await.expect("worker stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_a_job_finish_within_the_grace_period() {
    let app = common::spawn_app_with(
        |c| {
            c.worker.shutdown_grace_secs = 10;
            c.providers.local.delay_ms = 400;
        },
        Roles::ALL,
    )
    .await;
    let job_id = submit(&app).await;
    app.wait_for(&job_id, &["RUNNING"], Duration::from_secs(10))
        .await;
    let store = app.app.store.clone();
    let tenant_id = app.tenant_id.clone();
    app.stop.cancel();
    tokio::time::timeout(Duration::from_secs(8), app.handle)
        .await
        .expect("stops once the job is done")
        .expect("server task");
    let job = store.job_get(&tenant_id, &job_id).await.unwrap().unwrap();
    assert_eq!((job.status, job.attempts), (JobStatus::Succeeded, 1));
    assert!(event_trail(store.as_ref(), &job_id)
        .await
        .iter()
        .all(|(s, _, _)| *s != JobStatus::Retrying));
}
