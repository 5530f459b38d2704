//! Job follow-ups (`jobs::followups`): a follower hears of each of its jobs once the job has
//! ended, whatever ended it, again after a failure (with backoff, on the store's clock), and
//! from the running loop.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use easel::base::clock::{now_millis, ManualWallClock, WallClock};
use easel::base::job::{Job, JobParams, JobStatus, Mode, NewJob, SubmitOutcome};
use easel::events::{Change, EventBus, LocalBus};
use easel::jobs::followups::{self, Followers, JobFollower};
use easel::store::sqlite::SqliteStore;
use easel::store::{CancelOutcome, NewApiKey, NewTenant, Store};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Records the jobs it hears of; fails the first `failures` calls.
#[derive(Default)]
struct Recorder {
    heard: Mutex<Vec<(String, JobStatus)>>,
    failures: Mutex<u32>,
    called: Notify,
}

#[async_trait]
impl JobFollower for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    async fn job_ended(&self, job: &Job) -> Result<(), String> {
        self.heard
            .lock()
            .unwrap()
            .push((job.id.clone(), job.status));
        self.called.notify_one();
        let mut failures = self.failures.lock().unwrap();
        if *failures > 0 {
            *failures -= 1;
            return Err("the session is busy".into());
        }
        Ok(())
    }
}

struct Setup {
    store: Arc<dyn Store>,
    clock: Arc<ManualWallClock>,
    tenant_id: String,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualWallClock::new(now_millis()));
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open_with_clock(&dir.path().join("e.db"), clock.clone()).unwrap());
    let tenant = store
        .tenant_create(
            NewTenant {
                id: "ten_f".into(),
                name: "f".into(),
                rpm_limit: 600,
                concurrency_limit: 5,
                burst: None,
            },
            NewApiKey {
                id: "key_f".into(),
                key_hash: easel::accounts::keys::hash_key("img_f"),
                prefix: "img_f".into(),
            },
        )
        .await
        .unwrap();
    Setup {
        store,
        clock,
        tenant_id: tenant.id,
        _dir: dir,
    }
}

async fn canceled_job(s: &Setup, id: &str, follow_up: Option<&str>) {
    let now = s.clock.now_millis();
    let job = NewJob {
        id: id.into(),
        tenant_id: s.tenant_id.clone(),
        prompt: "a red kite".into(),
        mode: Mode::Draft,
        input_image_url: None,
        params: JobParams::default(),
        provider: "local".into(),
        max_attempts: 1,
        created_at: now,
        cancel_at: None,
        deadline_at: now + 3_600_000,
        idempotency: None,
        webhook_url: None,
        charge: None,
        follow_up: follow_up.map(str::to_owned),
    };
    let outcome = s.store.job_submit(job).await.unwrap();
    assert!(matches!(outcome, SubmitOutcome::Created { .. }));
    let canceled = s.store.job_cancel(&s.tenant_id, id).await.unwrap();
    assert_eq!(canceled, CancelOutcome::Canceled);
}

#[tokio::test]
async fn a_failed_follow_up_is_retried_after_its_backoff_then_forgotten() {
    let s = setup().await;
    let recorder = Arc::new(Recorder::default());
    *recorder.failures.lock().unwrap() = 1;
    let followers = Followers::default().with(recorder.clone());
    canceled_job(&s, "job_a", Some("recorder")).await;
    canceled_job(&s, "job_b", None).await;

    assert_eq!(followups::run_due(s.store.as_ref(), &followers).await, 1);
    assert_eq!(
        *recorder.heard.lock().unwrap(),
        vec![("job_a".to_owned(), JobStatus::Canceled)],
        "only the job that asked, once it ended"
    );
    assert_eq!(
        s.store.followups_pending().await.unwrap(),
        1,
        "kept after a failure"
    );
    assert_eq!(
        followups::run_due(s.store.as_ref(), &followers).await,
        0,
        "backing off"
    );
    s.clock.advance(followups::backoff(1));
    assert_eq!(followups::run_due(s.store.as_ref(), &followers).await, 1);
    assert_eq!(recorder.heard.lock().unwrap().len(), 2);
    assert_eq!(
        s.store.followups_pending().await.unwrap(),
        0,
        "done after a success"
    );
}

#[tokio::test]
async fn an_unknown_follower_leaves_the_row_for_a_process_that_has_it() {
    let s = setup().await;
    canceled_job(&s, "job_c", Some("photo")).await;
    let none = Followers::default();
    assert_eq!(followups::run_due(s.store.as_ref(), &none).await, 1);
    assert_eq!(s.store.followups_pending().await.unwrap(), 1);
}

#[tokio::test]
async fn the_runner_tells_the_follower_of_a_job_that_ended() {
    let s = setup().await;
    let recorder = Arc::new(Recorder::default());
    let bus = Arc::new(LocalBus::new());
    let stop = CancellationToken::new();
    let runner = tokio::spawn(followups::run(
        s.store.clone(),
        Followers::default().with(recorder.clone()),
        bus.subscribe(),
        stop.clone(),
    ));
    let called = recorder.called.notified();
    canceled_job(&s, "job_d", Some("recorder")).await;
    bus.publish(Change::job(&s.tenant_id, "job_d"));
    tokio::time::timeout(Duration::from_secs(10), called)
        .await
        .expect("the follower heard of the job");
    stop.cancel();
    runner.await.unwrap();
    assert_eq!(
        *recorder.heard.lock().unwrap(),
        vec![("job_d".to_owned(), JobStatus::Canceled)]
    );
    assert_eq!(s.store.followups_pending().await.unwrap(), 0);
}
