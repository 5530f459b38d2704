//! The `Store` conformance suite: every test is written once against `Arc<dyn Store>` and runs
//! unchanged on each backend (DESIGN.md decision 2, "two stores, one behaviour").
//!
//! Backends: SQLite always (a fresh database file per test); PostgreSQL when
//! `EASEL_TEST_PG_URL` is set (a fresh schema per test, since tests run in parallel and claims
//! see every tenant's jobs; without the variable each PostgreSQL test prints a skip note).
//! PostgreSQL-only behaviour (the NOTIFY wake-up, concurrent submits from separate pools) is
//! at the end.
//!
//! Time: each store stamps its writes with the bundle's manual clock, which stands still
//! until a test moves it: tests that need time to pass move the clock (or pass a future `now`
//! to `job_maintain`), never sleep, and every time a test writes comes from that clock.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use easel::base::clock::{now_millis, ManualWallClock, Millis, WallClock};

use easel::base::image::{
    ImageDeleteOutcome, ImageListQuery, ImageObject, ImageOwner, ImageRecord, NewImage, ObjectState,
};
use easel::base::job::Mode;
use easel::base::job::{
    ClaimedJob, Claimer, Finish, IdempotencyClaim, Job, JobEvent, JobListQuery, JobParams,
    JobStatus, NewJob, SubmitOutcome,
};
use easel::base::webhook::{
    AttemptOutcome, AttemptReport, Delivery, DeliveryClaim, DeliveryListQuery, DeliverySource,
    DeliveryState, ReplayOutcome, SealedSecret, WebhookEvents, WebhookSet,
};
use easel::store::postgres::PgStore;
use easel::store::sqlite::SqliteStore;
use easel::store::{
    CancelOutcome, IdempotencyHit, Maintenance, NewApiKey, NewProviderKey, NewTenant, OpenJobs,
    Store, StoreError, Tenant,
};

const HOUR: Millis = 3_600_000;
const TINY_LEASE: Duration = Duration::from_millis(1);
const LONG_LEASE: Duration = Duration::from_secs(600);

/// One backend under test, with a fresh, empty database.
struct Bundle {
    store: Arc<dyn Store>,
    /// The store's clock: it moves only when the test moves it.
    clock: Arc<ManualWallClock>,
    /// Keeps the SQLite folder alive for the test's duration.
    _dir: Option<tempfile::TempDir>,
}

impl Bundle {
    /// A clock that starts at the real time, so stamps look like today's.
    fn clock() -> Arc<ManualWallClock> {
        Arc::new(ManualWallClock::new(now_millis()))
    }

    /// The store's time.
    fn now(&self) -> Millis {
        self.clock.now_millis()
    }

    /// A job to submit now.
    fn job(&self, tenant_id: &str) -> NewJob {
        new_job(tenant_id, self.now())
    }

    async fn sqlite() -> Option<Bundle> {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Bundle::clock();
        let store = SqliteStore::open_with_clock(&dir.path().join("easel.db"), clock.clone())
            .expect("open sqlite");
        Some(Bundle {
            store: Arc::new(store),
            clock,
            _dir: Some(dir),
        })
    }

    /// A store in a schema of its own (migrated on open), or `None` without
    /// `EASEL_TEST_PG_URL`.
    async fn postgres() -> Option<Bundle> {
        let (url, schema) = pg_schema().await?;
        let clock = Bundle::clock();
        let store = PgStore::connect_with_schema(&url, &schema, &pg_settings())
            .await
            .expect("connect to EASEL_TEST_PG_URL")
            .with_clock(clock.clone());
        Some(Bundle {
            store: Arc::new(store),
            clock,
            _dir: None,
        })
    }
}

#[path = "common/stores.rs"]
mod stores;
use stores::{pg_schema, pg_settings};

// ---- factories for test data ----

fn ulid() -> String {
    ulid::Ulid::new().to_string().to_lowercase()
}

fn key_hash(seed: &str) -> [u8; 32] {
    easel::accounts::keys::hash_key(seed)
}

fn api_key(seed: &str) -> NewApiKey {
    NewApiKey {
        id: format!("key_{}", ulid()),
        key_hash: key_hash(seed),
        prefix: seed.chars().take(8).collect(),
    }
}

async fn tenant(store: &dyn Store, name: &str, concurrency: u32) -> Tenant {
    store
        .tenant_create(
            NewTenant {
                id: format!("ten_{}", ulid()),
                name: name.to_owned(),
                rpm_limit: 600,
                concurrency_limit: concurrency,
                burst: None,
            },
            api_key(&format!("img_{name}_{}", ulid())),
        )
        .await
        .expect("tenant_create")
}

fn new_job(tenant_id: &str, now: Millis) -> NewJob {
    NewJob {
        id: format!("job_{}", ulid()),
        tenant_id: tenant_id.to_owned(),
        prompt: "a lighthouse at dusk".into(),
        mode: Mode::Draft,
        input_image_url: None,
        params: JobParams::default(),
        provider: "local".into(),
        max_attempts: 3,
        created_at: now,
        cancel_at: None,
        deadline_at: now + HOUR,
        idempotency: None,
        webhook_url: None,
        charge: None,
        follow_up: None,
    }
}

async fn submit(store: &dyn Store, job: NewJob) -> String {
    match store.job_submit(job).await.expect("job_submit") {
        SubmitOutcome::Created { job_id } => job_id,
        other => panic!("expected Created, got {other:?}"),
    }
}

async fn submit_n(b: &Bundle, tenant_id: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(submit(b.store.as_ref(), b.job(tenant_id)).await);
    }
    ids
}

async fn get(store: &dyn Store, tenant_id: &str, job_id: &str) -> Job {
    store
        .job_get(tenant_id, job_id)
        .await
        .expect("job_get")
        .unwrap_or_else(|| panic!("job {job_id} not found"))
}

async fn claim(store: &dyn Store, max: u32, lease: Duration) -> Vec<ClaimedJob> {
    store
        .job_claim("wrk_test", max, lease)
        .await
        .expect("claim")
}

async fn claim_one(store: &dyn Store, lease: Duration) -> ClaimedJob {
    let mut claimed = claim(store, 1, lease).await;
    assert_eq!(claimed.len(), 1, "expected one claimable job");
    claimed.remove(0)
}

async fn statuses(store: &dyn Store, job_id: &str) -> Vec<(JobStatus, u32, Option<String>)> {
    store
        .job_events(job_id)
        .await
        .expect("job_events")
        .into_iter()
        .map(|e| (e.status, e.attempt, e.error_code))
        .collect()
}

fn failed(code: &str) -> Finish {
    Finish::Failed {
        error_code: code.into(),
        error_message: format!("{code} happened"),
    }
}

fn succeeded(keys: &[&str]) -> Finish {
    Finish::Succeeded {
        result_keys: keys.iter().map(|k| k.to_string()).collect(),
        meta: Some(serde_json::json!({"modelVersion": "local-1"})),
    }
}

fn retry(run_at: Millis) -> Finish {
    Finish::Retry {
        run_at,
        error_code: "UPSTREAM_RATE_LIMITED".into(),
        error_message: "429 from upstream".into(),
    }
}

// ---- tenants and keys ----

async fn tenant_create_and_list(b: Bundle) {
    let s = b.store.as_ref();
    assert!(s.tenant_list().await.unwrap().is_empty());
    let before = b.now();
    let acme = tenant(s, "Acme", 5).await;
    let zeta = tenant(s, "Zeta", 7).await;
    let after = b.now();
    assert_eq!((acme.name.as_str(), acme.rpm_limit), ("Acme", 600));
    assert_eq!(acme.concurrency_limit, 5);
    assert!((before..=after).contains(&acme.created_at));
    let mut listed = s.tenant_list().await.unwrap();
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(listed, vec![acme, zeta]);
}

async fn api_key_find_by_hash(b: Bundle) {
    let s = b.store.as_ref();
    let acme = tenant(s, "Acme", 5).await;
    let key = api_key("img_acme_second");
    s.api_key_add(&acme.id, key.clone()).await.unwrap();
    let found = s.api_key_find(&key.key_hash).await.unwrap().expect("found");
    assert_eq!(found.key_hash, key.key_hash);
    assert_eq!(found.tenant, acme);
    assert!(s
        .api_key_find(&key_hash("img_nobody"))
        .await
        .unwrap()
        .is_none());
    let orphan = s.api_key_add("ten_missing", api_key("img_orphan")).await;
    assert!(matches!(orphan, Err(StoreError::NotFound)), "{orphan:?}");
    assert!(s
        .api_key_find(&key_hash("img_orphan"))
        .await
        .unwrap()
        .is_none());
}

async fn duplicate_key_hash_is_a_conflict(b: Bundle) {
    let s = b.store.as_ref();
    let acme = tenant(s, "Acme", 5).await;
    let key = api_key("img_shared");
    s.api_key_add(&acme.id, key.clone()).await.unwrap();
    let again = s.api_key_add(&acme.id, api_key("img_shared")).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    // A new tenant whose first key collides is not created at all (one transaction).
    let other = s
        .tenant_create(
            NewTenant {
                id: "ten_other".into(),
                name: "Other".into(),
                rpm_limit: 60,
                concurrency_limit: 1,
                burst: None,
            },
            api_key("img_shared"),
        )
        .await;
    assert!(matches!(other, Err(StoreError::Conflict(_))), "{other:?}");
    let names: Vec<String> = s
        .tenant_list()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, vec!["Acme".to_owned()]);
    let owner = s.api_key_find(&key.key_hash).await.unwrap().unwrap();
    assert_eq!(owner.tenant.id, acme.id);
}

async fn provider_keys_add_and_list(b: Bundle) {
    let s = b.store.as_ref();
    let key = |provider: &str, fp: &str, priority: i32| NewProviderKey {
        id: format!("pk_{}", ulid()),
        provider: provider.into(),
        secret_sealed: vec![1, 2, 3, fp.len() as u8],
        fingerprint: fp.into(),
        rpm_limit: 60,
        concurrency_limit: 2,
        endpoint: (priority > 0).then(|| "https://relay.example.com".into()),
        priority,
        project: Some(format!("proj-{fp}")),
    };
    let low = key("gemini", "sha256:aaaa", 0);
    let record = s.provider_key_add(low.clone()).await.unwrap();
    assert_eq!(record.id, low.id);
    assert_eq!(record.secret_sealed, low.secret_sealed);
    assert_eq!(record.endpoint, None);
    assert_eq!(record.project.as_deref(), Some("proj-sha256:aaaa"));
    assert!(record.enabled);
    let high = key("gemini", "sha256:bbbb", 5);
    s.provider_key_add(high.clone()).await.unwrap();
    let openai = key("openai", "sha256:cccc", 1);
    s.provider_key_add(openai.clone()).await.unwrap();
    let listed = s.provider_key_list().await.unwrap();
    let order: Vec<&str> = listed.iter().map(|k| k.id.as_str()).collect();
    // By provider, then highest priority first.
    assert_eq!(order, vec![&high.id[..], &low.id[..], &openai.id[..]]);
    assert_eq!(
        listed[0].endpoint.as_deref(),
        Some("https://relay.example.com")
    );
    assert_eq!((listed[0].rpm_limit, listed[0].concurrency_limit), (60, 2));
    assert_eq!(listed[0].priority, 5);
    let dup = s.provider_key_add(key("gemini", "sha256:aaaa", 3)).await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    assert_eq!(s.provider_key_list().await.unwrap().len(), 3);
}

async fn provider_key_set_enabled_records_why(b: Bundle) {
    let s = b.store.as_ref();
    let record = s
        .provider_key_add(NewProviderKey {
            id: format!("pk_{}", ulid()),
            provider: "gemini".into(),
            secret_sealed: vec![7; 16],
            fingerprint: "sha256:state".into(),
            rpm_limit: 60,
            concurrency_limit: 2,
            endpoint: None,
            priority: 0,
            project: None,
        })
        .await
        .unwrap();
    assert!(record.enabled);
    assert_eq!(record.last_error, None);
    s.provider_key_set_enabled(&record.id, false, Some("403 PERMISSION_DENIED"))
        .await
        .unwrap();
    let listed = s.provider_key_list().await.unwrap();
    assert!(!listed[0].enabled);
    assert_eq!(
        listed[0].last_error.as_deref(),
        Some("403 PERMISSION_DENIED")
    );
    s.provider_key_set_enabled(&record.id, true, None)
        .await
        .unwrap();
    let listed = s.provider_key_list().await.unwrap();
    assert!(listed[0].enabled);
    assert_eq!(listed[0].last_error, None);
    let missing = s.provider_key_set_enabled("pk_missing", false, None).await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
}

// ---- submit, read, list, cancel ----

async fn submit_creates_queued_job_and_one_event(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s, "Acme", 5).await;
    let mut job = b.job(&t.id);
    job.mode = Mode::Final;
    job.input_image_url = Some("https://example.com/in.png".into());
    job.params = JobParams {
        seed: Some(42),
        n: Some(2),
        aspect_ratio: Some("16:9".into()),
        image_size: Some("2K".into()),
        model: Some("gpt-image-1".into()),
        inputs: vec!["t/inputs/a-0.png".into(), "t/inputs/a-1.png".into()],
        mask: Some("t/inputs/a-mask.png".into()),
        variation: false,
        options: serde_json::json!({"quality": "high", "output_compression": 80})
            .as_object()
            .cloned(),
        input_image_ids: vec!["img_1".into()],
        operation: easel::base::operation::Operation::Upscale {
            style: easel::base::operation::UpscaleStyle::Creative,
            factor: 4,
        },
        parent_job_id: Some("job_parent".into()),
        parent_index: Some(2),
        grid: true,
        history: Vec::new(),
    };
    job.cancel_at = Some(job.created_at + 5_000);
    let id = submit(s, job.clone()).await;
    assert_eq!(id, job.id);
    let got = get(s, &t.id, &id).await;
    assert_eq!(got.status, JobStatus::Queued);
    assert_eq!(
        (got.prompt.as_str(), got.mode),
        (job.prompt.as_str(), Mode::Final)
    );
    assert_eq!(got.input_image_url, job.input_image_url);
    assert_eq!(got.params, job.params);
    assert_eq!(got.provider, "local");
    assert_eq!((got.attempts, got.max_attempts), (0, 3));
    assert_eq!(
        (got.created_at, got.updated_at),
        (job.created_at, job.created_at)
    );
    assert_eq!(
        (got.cancel_at, got.deadline_at),
        (job.cancel_at, job.deadline_at)
    );
    assert_eq!((got.started_at, got.finished_at), (None, None));
    assert!(got.result_keys.is_empty() && got.error_code.is_none());
    let events = s.job_events(&id).await.unwrap();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(
        (e.status, e.attempt, e.at),
        (JobStatus::Queued, 0, job.created_at)
    );
    assert_eq!(
        (e.job_id.as_str(), e.tenant_id.as_str()),
        (&id[..], &t.id[..])
    );
    let dup = s.job_submit(job).await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    assert_eq!(s.job_events(&id).await.unwrap().len(), 1);
}

async fn idempotency_replays_refuses_and_is_per_tenant(b: Bundle) {
    let s = b.store.as_ref();
    let a = tenant(s, "A", 5).await;
    let other = tenant(s, "B", 5).await;
    let with_key = |tenant_id: &str, hash: &str| {
        let mut job = b.job(tenant_id);
        job.idempotency = Some(IdempotencyClaim {
            key: "order-17".into(),
            request_hash: hash.into(),
        });
        job
    };
    let first = submit(s, with_key(&a.id, "h1")).await;
    let replay = s.job_submit(with_key(&a.id, "h1")).await.unwrap();
    assert_eq!(
        replay,
        SubmitOutcome::Replayed {
            job_id: first.clone(),
            status: JobStatus::Queued
        }
    );
    let reused = s.job_submit(with_key(&a.id, "h2")).await.unwrap();
    assert_eq!(reused, SubmitOutcome::KeyReused);
    // Neither the replay nor the refusal wrote a job or an event.
    let page = s
        .job_list(JobListQuery {
            tenant_id: a.id.clone(),
            status: None,
            limit: 10,
            before_seq: None,
        })
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(s.job_events(&first).await.unwrap().len(), 1);
    // The replay reports the job's current status.
    claim_one(s, LONG_LEASE).await;
    let replay = s.job_submit(with_key(&a.id, "h1")).await.unwrap();
    assert_eq!(
        replay,
        SubmitOutcome::Replayed {
            job_id: first.clone(),
            status: JobStatus::Running
        }
    );
    // The same key under another tenant is another job.
    let theirs = submit(s, with_key(&other.id, "h2")).await;
    assert_ne!(theirs, first);
    assert_eq!(get(s, &other.id, &theirs).await.status, JobStatus::Queued);
}

async fn job_get_is_scoped_by_tenant(b: Bundle) {
    let s = b.store.as_ref();
    let a = tenant(s, "A", 5).await;
    let other = tenant(s, "B", 5).await;
    let id = submit(s, b.job(&a.id)).await;
    assert_eq!(get(s, &a.id, &id).await.tenant_id, a.id);
    assert_eq!(s.job_get(&other.id, &id).await.unwrap(), None);
    assert_eq!(s.job_get(&a.id, "job_missing").await.unwrap(), None);
}

async fn list_newest_first_with_filter_and_paging(b: Bundle) {
    let s = b.store.as_ref();
    let a = tenant(s, "A", 5).await;
    let other = tenant(s, "B", 5).await;
    let ids = submit_n(&b, &a.id, 5).await;
    submit_n(&b, &other.id, 2).await;
    let query = |status: Option<JobStatus>, limit: u32, before_seq: Option<i64>| JobListQuery {
        tenant_id: a.id.clone(),
        status,
        limit,
        before_seq,
    };
    let all = s.job_list(query(None, 10, None)).await.unwrap();
    let listed: Vec<&str> = all.items.iter().map(|j| j.id.as_str()).collect();
    let newest_first: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    assert_eq!(listed, newest_first);
    assert!(!all.has_more);
    assert!(all.items.windows(2).all(|w| w[0].seq > w[1].seq));
    // Pages of two, each starting below the previous page's last seq.
    let mut paged = Vec::new();
    let mut before = None;
    let mut pages = 0;
    loop {
        let page = s.job_list(query(None, 2, before)).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= 2);
        paged.extend(page.items.iter().map(|j| j.id.clone()));
        if !page.has_more {
            break;
        }
        before = Some(page.items.last().unwrap().seq);
    }
    assert_eq!(pages, 3);
    assert_eq!(paged, newest_first);
    // Status filter.
    assert_eq!(
        s.job_cancel(&a.id, &ids[1]).await.unwrap(),
        CancelOutcome::Canceled
    );
    let canceled = s
        .job_list(query(Some(JobStatus::Canceled), 10, None))
        .await
        .unwrap();
    assert_eq!(canceled.items.len(), 1);
    assert_eq!(canceled.items[0].id, ids[1]);
    let queued = s
        .job_list(query(Some(JobStatus::Queued), 10, None))
        .await
        .unwrap();
    assert_eq!(queued.items.len(), 4);
    assert!(queued.items.iter().all(|j| j.status == JobStatus::Queued));
    let running = s
        .job_list(query(Some(JobStatus::Running), 10, None))
        .await
        .unwrap();
    assert!(running.items.is_empty() && !running.has_more);
}

async fn cancel_outcomes(b: Bundle) {
    let s = b.store.as_ref();
    let a = tenant(s, "A", 5).await;
    let other = tenant(s, "B", 5).await;
    let running = submit(s, b.job(&a.id)).await;
    let claimed = claim_one(s, LONG_LEASE).await;
    assert_eq!(claimed.job.id, running);
    let queued = submit(s, b.job(&a.id)).await;

    assert_eq!(
        s.job_cancel(&other.id, &queued).await.unwrap(),
        CancelOutcome::NotFound
    );
    assert_eq!(get(s, &a.id, &queued).await.status, JobStatus::Queued);
    assert_eq!(
        s.job_cancel(&a.id, "job_missing").await.unwrap(),
        CancelOutcome::NotFound
    );
    let before = b.now();
    assert_eq!(
        s.job_cancel(&a.id, &queued).await.unwrap(),
        CancelOutcome::Canceled
    );
    let job = get(s, &a.id, &queued).await;
    assert_eq!(job.status, JobStatus::Canceled);
    assert!(job.finished_at.is_some_and(|t| t >= before));
    assert_eq!(
        statuses(s, &queued).await,
        vec![(JobStatus::Queued, 0, None), (JobStatus::Canceled, 0, None)]
    );
    assert_eq!(
        s.job_cancel(&a.id, &queued).await.unwrap(),
        CancelOutcome::InvalidState(JobStatus::Canceled)
    );
    // A job waiting between attempts can be canceled too; a canceled job is never claimed.
    s.job_finish(&running, claimed.fence, retry(b.now()))
        .await
        .unwrap();
    assert_eq!(
        s.job_cancel(&a.id, &running).await.unwrap(),
        CancelOutcome::Canceled
    );
    assert!(claim(s, 10, LONG_LEASE).await.is_empty());
    assert_eq!(s.job_next_run_at().await.unwrap(), None);
    // Finished jobs stay as they are.
    let done = submit(s, b.job(&a.id)).await;
    let claimed = claim_one(s, LONG_LEASE).await;
    s.job_finish(&done, claimed.fence, succeeded(&["k"]))
        .await
        .unwrap();
    assert_eq!(
        s.job_cancel(&a.id, &done).await.unwrap(),
        CancelOutcome::InvalidState(JobStatus::Succeeded)
    );
    assert_eq!(get(s, &a.id, &done).await.status, JobStatus::Succeeded);
}

/// A RUNNING job is canceled at once: its fence moves on, so the attempt's heartbeat and its
/// late result find the lease lost and change nothing; its slot is free for the next claim.
async fn cancel_running_fences_out_the_attempt(b: Bundle) {
    let s = b.store.as_ref();
    let a = tenant(s, "A", 1).await;
    let running = submit(s, b.job(&a.id)).await;
    let next = submit(s, b.job(&a.id)).await;
    // A lease that has run out by the maintenance pass below, which must still leave it be.
    let claimed = claim_one(s, TINY_LEASE).await;
    assert_eq!(claimed.job.id, running);
    assert!(claim(s, 1, LONG_LEASE).await.is_empty(), "tenant is at 1");
    let before = b.now();
    assert_eq!(
        s.job_cancel(&a.id, &running).await.unwrap(),
        CancelOutcome::Canceled
    );
    let job = get(s, &a.id, &running).await;
    assert_eq!(job.status, JobStatus::Canceled);
    assert!(job.finished_at.is_some_and(|t| t >= before));
    assert_eq!((job.error_code, job.result_keys.len()), (None, 0));
    assert!(matches!(
        s.job_heartbeat(&running, claimed.fence, LONG_LEASE).await,
        Err(StoreError::LeaseLost)
    ));
    assert!(matches!(
        s.job_finish(&running, claimed.fence, succeeded(&["late.png"]))
            .await,
        Err(StoreError::LeaseLost)
    ));
    let job = get(s, &a.id, &running).await;
    assert_eq!(job.status, JobStatus::Canceled);
    assert!(job.result_keys.is_empty(), "{:?}", job.result_keys);
    assert_eq!(
        statuses(s, &running).await,
        vec![
            (JobStatus::Queued, 0, None),
            (JobStatus::Running, 1, None),
            (JobStatus::Canceled, 1, None)
        ]
    );
    assert_eq!(
        s.job_cancel(&a.id, &running).await.unwrap(),
        CancelOutcome::InvalidState(JobStatus::Canceled)
    );
    // Nothing is left for the rescuer, and the tenant's slot went to the next job.
    let later = b.now() + 1_000;
    assert_eq!(s.job_maintain(later).await.unwrap(), Maintenance::default());
    assert_eq!(get(s, &a.id, &running).await.status, JobStatus::Canceled);
    assert_eq!(claim_one(s, LONG_LEASE).await.job.id, next);
}

/// A cancel racing the attempt's finish: exactly one of them wins, and the job ends in
/// exactly one terminal state with exactly one terminal event. Run many times.
async fn cancel_racing_a_finish_ends_once(b: Bundle) {
    let s = b.store.clone();
    let a = tenant(s.as_ref(), "A", 50).await;
    let (mut canceled_wins, mut finish_wins) = (0, 0);
    for round in 0..40 {
        let id = submit(s.as_ref(), b.job(&a.id)).await;
        let claimed = claim_one(s.as_ref(), LONG_LEASE).await;
        assert_eq!(claimed.job.id, id);
        let start = Arc::new(tokio::sync::Barrier::new(2));
        let cancel = {
            let (s, start, tenant, id) = (s.clone(), start.clone(), a.id.clone(), id.clone());
            tokio::spawn(async move {
                start.wait().await;
                s.job_cancel(&tenant, &id).await.unwrap()
            })
        };
        let finish = {
            let (s, start, id) = (s.clone(), start.clone(), id.clone());
            let outcome = if round % 2 == 0 {
                succeeded(&["r.png"])
            } else {
                failed("UPSTREAM_ERROR")
            };
            tokio::spawn(async move {
                start.wait().await;
                s.job_finish(&id, claimed.fence, outcome).await
            })
        };
        let (cancel, finish) = (cancel.await.unwrap(), finish.await.unwrap());
        let job = get(s.as_ref(), &a.id, &id).await;
        let terminal: Vec<JobStatus> = statuses(s.as_ref(), &id)
            .await
            .into_iter()
            .map(|(status, _, _)| status)
            .filter(|status| status.is_terminal())
            .collect();
        assert_eq!(terminal, vec![job.status], "round {round}");
        match (cancel, finish) {
            (CancelOutcome::Canceled, Err(StoreError::LeaseLost)) => {
                assert_eq!(job.status, JobStatus::Canceled, "round {round}");
                assert!(job.result_keys.is_empty(), "round {round}");
                canceled_wins += 1;
            }
            (CancelOutcome::InvalidState(status), Ok(())) => {
                assert_eq!(status, job.status, "round {round}");
                assert_ne!(job.status, JobStatus::Canceled, "round {round}");
                finish_wins += 1;
            }
            other => panic!("round {round}: both or neither won: {other:?}"),
        }
    }
    assert_eq!(canceled_wins + finish_wins, 40);
    eprintln!("cancel won {canceled_wins} rounds, the finish {finish_wins}");
}

async fn idempotency_find_answers_before_a_submit(b: Bundle) {
    let s = b.store.as_ref();
    let a = tenant(s, "A", 5).await;
    let other = tenant(s, "B", 5).await;
    assert_eq!(s.idempotency_find(&a.id, "order-1").await.unwrap(), None);
    let mut job = b.job(&a.id);
    job.idempotency = Some(IdempotencyClaim {
        key: "order-1".into(),
        request_hash: "h1".into(),
    });
    let id = submit(s, job).await;
    let hit = IdempotencyHit {
        request_hash: "h1".into(),
        job_id: id.clone(),
        status: JobStatus::Queued,
    };
    assert_eq!(
        s.idempotency_find(&a.id, "order-1").await.unwrap(),
        Some(hit.clone())
    );
    assert_eq!(
        s.idempotency_find(&other.id, "order-1").await.unwrap(),
        None
    );
    assert_eq!(s.idempotency_find(&a.id, "order-2").await.unwrap(), None);
    claim_one(s, LONG_LEASE).await;
    let found = s.idempotency_find(&a.id, "order-1").await.unwrap();
    assert_eq!(found.map(|h| h.status), Some(JobStatus::Running));
}

async fn tenant_burst_is_kept_and_defaults_to_none(b: Bundle) {
    let s = b.store.as_ref();
    let a = tenant(s, "A", 5).await;
    assert_eq!(a.burst, None);
    let changed = s
        .tenant_update_limits(&a.id, 120, 7, Some(12))
        .await
        .unwrap();
    assert_eq!(
        (changed.rpm_limit, changed.concurrency_limit, changed.burst),
        (120, 7, Some(12))
    );
    assert_eq!(s.tenant_get(&a.id).await.unwrap().unwrap().burst, Some(12));
    let listed = s.tenant_list().await.unwrap();
    assert_eq!(listed[0].burst, Some(12));
    let seed = s.api_key_find(&key_hash("img_burst")).await.unwrap();
    assert!(seed.is_none());
    s.api_key_add(&a.id, api_key("img_burst")).await.unwrap();
    let record = s
        .api_key_find(&key_hash("img_burst"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.tenant.burst, Some(12));
    let reset = s.tenant_update_limits(&a.id, 120, 7, None).await.unwrap();
    assert_eq!(reset.burst, None);
    let created = s
        .tenant_create(
            NewTenant {
                id: format!("ten_{}", ulid()),
                name: "C".into(),
                rpm_limit: 60,
                concurrency_limit: 1,
                burst: Some(4),
            },
            api_key("img_c_burst"),
        )
        .await
        .unwrap();
    assert_eq!(
        s.tenant_get(&created.id).await.unwrap().unwrap().burst,
        Some(4)
    );
    assert!(matches!(
        s.tenant_update_limits("ten_missing", 1, 1, Some(1)).await,
        Err(StoreError::NotFound)
    ));
}

/// Identical submits racing with one idempotency key make exactly one job; the rest replay
/// it, and a different body under the same key is refused, never a second job.
async fn concurrent_identical_submits_make_one_job(b: Bundle) {
    let s = b.store.clone();
    let t = tenant(s.as_ref(), "A", 5).await;
    let keyed = |hash: &str| {
        let mut job = b.job(&t.id);
        job.idempotency = Some(IdempotencyClaim {
            key: "order-50".into(),
            request_hash: hash.into(),
        });
        job
    };
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let s = s.clone();
        let job = keyed(if i == 49 { "other-body" } else { "h1" });
        tasks.spawn(async move { s.job_submit(job).await.expect("job_submit") });
    }
    let mut created = Vec::new();
    let mut replayed = Vec::new();
    let mut reused = 0;
    while let Some(outcome) = tasks.join_next().await {
        match outcome.expect("submit task") {
            SubmitOutcome::Created { job_id } => created.push(job_id),
            SubmitOutcome::Replayed { job_id, status } => {
                assert_eq!(status, JobStatus::Queued);
                replayed.push(job_id);
            }
            SubmitOutcome::KeyReused => reused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    // The odd body either lost the race (refused) or won it (then all 49 others are refused).
    assert_eq!(created.len(), 1, "exactly one job: {created:?}");
    assert!(
        (reused == 1 && replayed.len() == 48) || (reused == 49 && replayed.is_empty()),
        "reused {reused}, replayed {}",
        replayed.len()
    );
    assert!(replayed.iter().all(|id| *id == created[0]));
    let page = s
        .job_list(JobListQuery {
            tenant_id: t.id.clone(),
            status: None,
            limit: 100,
            before_seq: None,
        })
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(s.job_events(&created[0]).await.unwrap().len(), 1);
}

// ---- claim ----

async fn claim_bumps_attempt_and_fence_and_sets_lease(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s, "A", 50).await;
    let ids = submit_n(&b, &t.id, 5).await;
    let lease = Duration::from_secs(30);
    let before = b.now();
    let first = claim(s, 3, lease).await;
    let after = b.now();
    let got: Vec<&str> = first.iter().map(|c| c.job.id.as_str()).collect();
    assert_eq!(got, ids[..3].iter().map(String::as_str).collect::<Vec<_>>());
    for c in &first {
        assert_eq!((c.job.status, c.job.attempts), (JobStatus::Running, 1));
        assert!((before + 30_000..=after + 30_000).contains(&c.lease_until));
        assert!(c
            .job
            .started_at
            .is_some_and(|t| (before..=after).contains(&t)));
        let stored = get(s, &t.id, &c.job.id).await;
        assert_eq!(stored.status, JobStatus::Running);
        assert_eq!((stored.attempts, stored.started_at), (1, c.job.started_at));
        assert_eq!(
            statuses(s, &c.job.id).await,
            vec![(JobStatus::Queued, 0, None), (JobStatus::Running, 1, None)]
        );
    }
    assert_eq!(claim(s, 3, lease).await.len(), 2, "only two were left");
    assert!(claim(s, 3, lease).await.is_empty());
    // A second attempt gets a larger fence and attempt 2, and keeps the first start time.
    let c = &first[0];
    s.job_finish(&c.job.id, c.fence, retry(b.now()))
        .await
        .unwrap();
    let again = claim_one(s, lease).await;
    assert_eq!(again.job.id, c.job.id);
    assert!(again.fence > c.fence, "{} > {}", again.fence, c.fence);
    assert_eq!(again.job.attempts, 2);
    assert_eq!(again.job.started_at, c.job.started_at);
    assert_eq!(
        again.job.error_code, None,
        "a new attempt clears the last error"
    );
}

async fn claim_max_zero_claims_nothing(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s, "A", 5).await;
    let id = submit(s, b.job(&t.id)).await;
    assert!(claim(s, 0, LONG_LEASE).await.is_empty());
    assert_eq!(get(s, &t.id, &id).await.status, JobStatus::Queued);
}

async fn concurrent_claimers_never_share_a_job(b: Bundle) {
    let s = b.store.clone();
    let mut all = HashSet::new();
    for name in ["A", "B", "C", "D"] {
        let t = tenant(s.as_ref(), name, 1000).await;
        all.extend(submit_n(&b, &t.id, 50).await);
    }
    assert_eq!(all.len(), 200);
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let s = s.clone();
        tasks.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = s
                    .job_claim(&format!("wrk_{worker}"), 3, LONG_LEASE)
                    .await
                    .expect("claim");
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|c| (c.job.id, c.fence)));
                tokio::task::yield_now().await;
            }
        });
    }
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut busy_workers = 0;
    while let Some(mine) = tasks.join_next().await {
        let mine = mine.expect("claimer task");
        busy_workers += usize::from(!mine.is_empty());
        for (id, fence) in mine {
            assert_eq!(fence, 1, "first claim of {id}");
            *seen.entry(id).or_default() += 1;
        }
    }
    assert!(busy_workers >= 2, "claims should interleave across workers");
    let claimed: HashSet<String> = seen.keys().cloned().collect();
    assert_eq!(claimed, all, "every job claimed");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "claimed more than once: {twice:?}");
    for id in all.iter().take(20) {
        let running = statuses(s.as_ref(), id)
            .await
            .into_iter()
            .filter(|(st, _, _)| *st == JobStatus::Running)
            .count();
        assert_eq!(running, 1, "one RUNNING event for {id}");
    }
}

async fn claim_is_fair_across_tenants(b: Bundle) {
    let s = b.store.as_ref();
    let big = tenant(s, "Big", 1000).await;
    let small = tenant(s, "Small", 1000).await;
    submit_n(&b, &big.id, 100).await;
    let lone = submit(s, b.job(&small.id)).await;
    let batch = claim(s, 2, LONG_LEASE).await;
    let tenants: HashSet<&str> = batch.iter().map(|c| c.job.tenant_id.as_str()).collect();
    assert_eq!(batch.len(), 2);
    assert_eq!(tenants, HashSet::from([&big.id[..], &small.id[..]]));
    assert!(batch.iter().any(|c| c.job.id == lone));
    // Round-robin: a tenant that has just been served waits behind one that has not.
    claim(s, 5, LONG_LEASE).await;
    let late = submit(s, b.job(&small.id)).await;
    let next = claim_one(s, LONG_LEASE).await;
    assert_eq!(
        next.job.id, late,
        "the tenant served longest ago goes first"
    );
}

/// Tenants whose only work waits for a later `run_at` (or a free slot) must not hide a
/// tenant with runnable work from the claim, however many of them there are.
async fn claim_finds_runnable_work_behind_many_blocked_tenants(b: Bundle) {
    let s = b.store.as_ref();
    let mut blocked = Vec::new();
    for i in 0..300 {
        let t = tenant(s, &format!("Blocked{i}"), 1).await;
        submit(s, b.job(&t.id)).await;
        blocked.push(t);
    }
    let late = tenant(s, "Late", 5).await;
    // Serve every blocked tenant once, then the late one, so it was served most recently.
    let mut first = Vec::new();
    while first.len() < 300 {
        let batch = claim(s, 1000, LONG_LEASE).await;
        assert!(
            !batch.is_empty(),
            "blocked tenants' first jobs are claimable"
        );
        first.extend(batch);
    }
    let warmup = submit(s, b.job(&late.id)).await;
    let c = claim_one(s, LONG_LEASE).await;
    assert_eq!(c.job.id, warmup);
    s.job_finish(&warmup, c.fence, succeeded(&["k"]))
        .await
        .unwrap();
    // Half the blocked tenants wait on a retry far in the future; the other half are at
    // their concurrency limit with more work queued.
    for (i, c) in first.iter().enumerate() {
        if i % 2 == 0 {
            s.job_finish(&c.job.id, c.fence, retry(b.now() + HOUR))
                .await
                .unwrap();
        } else {
            submit(s, b.job(&c.job.tenant_id)).await;
        }
    }
    let runnable = submit(s, b.job(&late.id)).await;
    let batch = claim(s, 10, LONG_LEASE).await;
    let ids: Vec<&str> = batch.iter().map(|c| c.job.id.as_str()).collect();
    assert_eq!(ids, vec![&runnable[..]], "runnable work was not claimed");
}

/// A submit that claims starts its tenant's next job when the fair claim would serve that
/// tenant next anyway, and leaves it QUEUED when the tenant is at its limit or another
/// tenant's job waits.
async fn submit_claimed_starts_the_next_job_only_in_turn(b: Bundle) {
    let s = b.store.as_ref();
    let a = tenant(s, "A", 1).await;
    let other = tenant(s, "B", 5).await;
    let claimer = Claimer {
        worker_id: "wrk_submit".into(),
        lease: LONG_LEASE,
    };
    let submit_claimed = |job: NewJob| async {
        match s.job_submit_claimed(job, &claimer).await.expect("submit") {
            (SubmitOutcome::Created { job_id }, claimed) => (job_id, claimed),
            (other, _) => panic!("expected Created, got {other:?}"),
        }
    };
    // Nothing else waits: the job starts at once, under the claimer's lease.
    let (first, started) = submit_claimed(b.job(&a.id)).await;
    let started = started.expect("claimed at submit");
    assert_eq!(started.job.id, first);
    assert_eq!(
        (started.job.status, started.job.attempts),
        (JobStatus::Running, 1)
    );
    assert_eq!(
        started.lease_until,
        b.now() + LONG_LEASE.as_millis() as Millis
    );
    let job = get(s, &a.id, &first).await;
    assert_eq!(job.status, JobStatus::Running);
    assert_eq!(
        statuses(s, &first).await,
        vec![(JobStatus::Queued, 0, None), (JobStatus::Running, 1, None)]
    );
    // A is at its limit of 1: its next job waits.
    let (second, claimed) = submit_claimed(b.job(&a.id)).await;
    assert!(claimed.is_none());
    assert_eq!(get(s, &a.id, &second).await.status, JobStatus::Queued);
    // A's job waits (blocked, but the claim serves tenants in turn): B's waits for the claim.
    let (third, claimed) = submit_claimed(b.job(&other.id)).await;
    assert!(claimed.is_none());
    let by_claim = claim_one(s, LONG_LEASE).await;
    assert_eq!(by_claim.job.id, third, "the claim loop still takes it");
    // A's slot frees: its older waiting job is the one a submit of A starts.
    s.job_finish(&first, started.fence, succeeded(&["k"]))
        .await
        .expect("finish");
    let (fourth, claimed) = submit_claimed(b.job(&a.id)).await;
    assert_eq!(claimed.expect("claimed at submit").job.id, second);
    assert_eq!(get(s, &a.id, &fourth).await.status, JobStatus::Queued);
    assert!(
        claim(s, 10, LONG_LEASE).await.is_empty(),
        "A is at its limit again"
    );
}

async fn claim_respects_tenant_concurrency(b: Bundle) {
    let s = b.store.as_ref();
    let limited = tenant(s, "Limited", 2).await;
    let free = tenant(s, "Free", 100).await;
    submit_n(&b, &limited.id, 5).await;
    submit_n(&b, &free.id, 3).await;
    let batch = claim(s, 10, LONG_LEASE).await;
    let count =
        |batch: &[ClaimedJob], t: &Tenant| batch.iter().filter(|c| c.job.tenant_id == t.id).count();
    assert_eq!((count(&batch, &limited), count(&batch, &free)), (2, 3));
    assert!(claim(s, 10, LONG_LEASE).await.is_empty(), "limited is full");
    let done = batch
        .iter()
        .find(|c| c.job.tenant_id == limited.id)
        .unwrap();
    s.job_finish(&done.job.id, done.fence, succeeded(&["k"]))
        .await
        .unwrap();
    let next = claim(s, 10, LONG_LEASE).await;
    assert_eq!(next.len(), 1, "one slot freed");
    assert_eq!(next[0].job.tenant_id, limited.id);
}

/// The limit holds however claims, finishes and lease rescues interleave: PostgreSQL counts a
/// tenant's running jobs only when its running bound leaves no room (migration 0007), so
/// this walks a tenant through every path that moves that bound away from the true count.
async fn tenant_concurrency_holds_through_finishes_and_rescues(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s, "Busy", 5).await;
    submit_n(&b, &t.id, 30).await;
    let a = claim(s, 1, LONG_LEASE).await;
    let b2 = claim(s, 1, Duration::from_millis(1)).await;
    assert_eq!((a.len(), b2.len()), (1, 1));
    // Both end, one by a result and one by losing its lease: the tenant runs nothing now.
    s.job_finish(&a[0].job.id, a[0].fence, succeeded(&["k"]))
        .await
        .unwrap();
    assert_eq!(s.job_maintain(b.now() + 1000).await.unwrap().rescued, 1);
    assert_eq!(running_jobs(s, &t.id).await, 0);
    // Room for all five again, taken over calls of every size.
    let mut held = Vec::new();
    for (max, got) in [(3, 3), (1, 1), (4, 1), (4, 0)] {
        let batch = claim(s, max, LONG_LEASE).await;
        assert_eq!(
            batch.len(),
            got,
            "claim of {max} with {} running",
            held.len()
        );
        held.extend(batch);
    }
    assert_eq!(running_jobs(s, &t.id).await, 5);
    for done in held.drain(..2) {
        s.job_finish(&done.job.id, done.fence, succeeded(&["k"]))
            .await
            .unwrap();
    }
    assert_eq!(
        claim(s, 5, LONG_LEASE).await.len(),
        2,
        "two finished, two slots"
    );
    assert_eq!(running_jobs(s, &t.id).await, 5);
}

async fn running_jobs(s: &dyn Store, tenant_id: &str) -> usize {
    let page = s
        .job_list(JobListQuery {
            tenant_id: tenant_id.to_string(),
            status: Some(JobStatus::Running),
            limit: 100,
            before_seq: None,
        })
        .await
        .unwrap();
    page.items.len()
}

/// The queue's depth by status, over every tenant; finished jobs are not counted.
async fn open_counts_by_status(b: Bundle) {
    let s = b.store.as_ref();
    assert_eq!(s.job_open_counts().await.unwrap(), OpenJobs::default());
    let a = tenant(s, "A", 10).await;
    let other = tenant(s, "B", 10).await;
    submit_n(&b, &a.id, 3).await;
    submit_n(&b, &other.id, 2).await;
    let batch = claim(s, 3, LONG_LEASE).await;
    assert_eq!(batch.len(), 3);
    s.job_finish(&batch[0].job.id, batch[0].fence, succeeded(&["k"]))
        .await
        .unwrap();
    s.job_finish(&batch[1].job.id, batch[1].fence, retry(b.now() + 60_000))
        .await
        .unwrap();
    assert_eq!(
        s.job_open_counts().await.unwrap(),
        OpenJobs {
            queued: 2,
            retrying: 1,
            running: 1,
        }
    );
}

/// Claimers racing for one tenant never run more of its jobs at once than its limit.
async fn concurrent_claimers_respect_tenant_concurrency(b: Bundle) {
    let s = b.store.clone();
    let limited = tenant(s.as_ref(), "Limited", 3).await;
    submit_n(&b, &limited.id, 40).await;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let s = s.clone();
        tasks.spawn(async move {
            let mut mine = 0;
            for _ in 0..5 {
                mine += s
                    .job_claim(&format!("wrk_{worker}"), 2, LONG_LEASE)
                    .await
                    .expect("claim")
                    .len();
                tokio::task::yield_now().await;
            }
            mine
        });
    }
    let mut claimed = 0;
    while let Some(mine) = tasks.join_next().await {
        claimed += mine.expect("claimer task");
    }
    assert_eq!(claimed, 3, "the tenant's limit is 3");
    let running = s
        .job_list(JobListQuery {
            tenant_id: limited.id.clone(),
            status: Some(JobStatus::Running),
            limit: 100,
            before_seq: None,
        })
        .await
        .unwrap();
    assert_eq!(running.items.len(), 3);
}

// ---- heartbeat, finish, release ----

async fn heartbeat_extends_lease_and_detects_a_stale_fence(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s, "A", 5).await;
    let id = submit(s, b.job(&t.id)).await;
    let c = claim_one(s, TINY_LEASE).await;
    let before = b.now();
    let until = s
        .job_heartbeat(&id, c.fence, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(until >= before + 60_000 && until <= b.now() + 60_000);
    // The extended lease survives a maintenance pass that the 1 ms lease would not have.
    let m = s.job_maintain(b.now() + 1000).await.unwrap();
    assert_eq!(m, Maintenance::default());
    assert_eq!(get(s, &t.id, &id).await.status, JobStatus::Running);
    for stale in [c.fence - 1, c.fence + 1] {
        let hb = s.job_heartbeat(&id, stale, LONG_LEASE).await;
        assert!(matches!(hb, Err(StoreError::LeaseLost)), "{hb:?}");
    }
    s.job_finish(&id, c.fence, succeeded(&["a"])).await.unwrap();
    let hb = s.job_heartbeat(&id, c.fence, LONG_LEASE).await;
    assert!(
        matches!(hb, Err(StoreError::LeaseLost)),
        "after finish: {hb:?}"
    );
    let missing = s.job_heartbeat("job_missing", 1, LONG_LEASE).await;
    assert!(matches!(missing, Err(StoreError::LeaseLost)), "{missing:?}");
}

/// Progress is a RUNNING event per rise of the current attempt, under its fence only.
async fn progress_rises_as_events_of_the_running_attempt(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s, "A", 5).await;
    let id = submit(s, b.job(&t.id)).await;
    assert!(
        !s.job_progress(&id, 1, 10).await.unwrap(),
        "not running yet"
    );
    let c = claim_one(s, LONG_LEASE).await;
    assert_eq!(s.job_progress_get(&id).await.unwrap(), None);
    assert!(s.job_progress(&id, c.fence, 0).await.unwrap());
    assert!(s.job_progress(&id, c.fence, 45).await.unwrap());
    assert!(!s.job_progress(&id, c.fence, 45).await.unwrap(), "no rise");
    assert!(!s.job_progress(&id, c.fence, 30).await.unwrap(), "a fall");
    assert!(
        !s.job_progress(&id, c.fence + 1, 60).await.unwrap(),
        "stale fence"
    );
    assert_eq!(s.job_progress_get(&id).await.unwrap(), Some(45));
    s.job_finish(&id, c.fence, succeeded(&["a"])).await.unwrap();
    assert!(!s.job_progress(&id, c.fence, 80).await.unwrap(), "ended");
    let events = s.job_events(&id).await.unwrap();
    let seen: Vec<_> = events.iter().map(|e| (e.status, e.progress)).collect();
    assert_eq!(
        seen,
        [
            (JobStatus::Queued, None),
            (JobStatus::Running, None),
            (JobStatus::Running, Some(0)),
            (JobStatus::Running, Some(45)),
            (JobStatus::Succeeded, None),
        ]
    );
}

async fn finish_with_a_stale_fence_writes_nothing(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s, "A", 5).await;
    let id = submit(s, b.job(&t.id)).await;
    let c = claim_one(s, LONG_LEASE).await;
    let job_before = get(s, &t.id, &id).await;
    let events_before = s.job_events(&id).await.unwrap();
    for finish in [succeeded(&["x"]), failed("BOOM"), retry(b.now())] {
        let r = s.job_finish(&id, c.fence + 1, finish).await;
        assert!(matches!(r, Err(StoreError::LeaseLost)), "{r:?}");
    }
    let r = s.job_release(&id, c.fence - 1).await;
    assert!(matches!(r, Err(StoreError::LeaseLost)), "{r:?}");
    assert_eq!(get(s, &t.id, &id).await, job_before);
    assert_eq!(s.job_events(&id).await.unwrap(), events_before);
    let r = s.job_finish("job_missing", 1, failed("X")).await;
    assert!(matches!(r, Err(StoreError::LeaseLost)), "{r:?}");
}

async fn finish_succeeded_sets_results(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s, "A", 5).await;
    let id = submit(s, b.job(&t.id)).await;
    let c = claim_one(s, LONG_LEASE).await;
    let before = b.now();
    s.job_finish(&id, c.fence, succeeded(&["t/j/1-0.png", "t/j/1-1.png"]))
        .await
        .unwrap();
    let job = get(s, &t.id, &id).await;
    assert_eq!(job.status, JobStatus::Succeeded);
    assert_eq!(job.result_keys, vec!["t/j/1-0.png", "t/j/1-1.png"]);
    assert_eq!(
        job.result_meta,
        Some(serde_json::json!({"modelVersion": "local-1"}))
    );
    assert!(job.finished_at.is_some_and(|f| f >= before));
    assert_eq!((job.attempts, job.error_code), (1, None));
    assert_eq!(
        statuses(s, &id).await,
        vec![
            (JobStatus::Queued, 0, None),
            (JobStatus::Running, 1, None),
            (JobStatus::Succeeded, 1, None)
        ]
    );
    // Once ended, the same fence can write nothing more.
    let again = s.job_finish(&id, c.fence, failed("LATE")).await;
    assert!(matches!(again, Err(StoreError::LeaseLost)), "{again:?}");
    assert_eq!(get(s, &t.id, &id).await.status, JobStatus::Succeeded);
    assert!(claim(s, 5, LONG_LEASE).await.is_empty());
}

async fn finish_failed_sets_the_error(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s, "A", 5).await;
    let id = submit(s, b.job(&t.id)).await;
    let c = claim_one(s, LONG_LEASE).await;
    s.job_finish(&id, c.fence, failed("CONTENT_BLOCKED"))
        .await
        .unwrap();
    let job = get(s, &t.id, &id).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.error_code.as_deref(), Some("CONTENT_BLOCKED"));
    assert_eq!(
        job.error_message.as_deref(),
        Some("CONTENT_BLOCKED happened")
    );
    assert!(job.finished_at.is_some() && job.result_keys.is_empty());
    let events = s.job_events(&id).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!((last.status, last.attempt), (JobStatus::Failed, 1));
    assert_eq!(last.error_code.as_deref(), Some("CONTENT_BLOCKED"));
    assert_eq!(
        last.error_message.as_deref(),
        Some("CONTENT_BLOCKED happened")
    );
    assert!(claim(s, 5, LONG_LEASE).await.is_empty());
}

async fn finish_retry_waits_until_run_at(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s, "A", 5).await;
    let id = submit(s, b.job(&t.id)).await;
    let c = claim_one(s, LONG_LEASE).await;
    let run_at = b.now() + 300;
    s.job_finish(&id, c.fence, retry(run_at)).await.unwrap();
    let job = get(s, &t.id, &id).await;
    assert_eq!((job.status, job.attempts), (JobStatus::Retrying, 1));
    assert_eq!(job.error_code.as_deref(), Some("UPSTREAM_RATE_LIMITED"));
    assert_eq!(job.finished_at, None);
    assert_eq!(
        statuses(s, &id).await.last().cloned(),
        Some((
            JobStatus::Retrying,
            1,
            Some("UPSTREAM_RATE_LIMITED".to_owned())
        ))
    );
    assert_eq!(s.job_next_run_at().await.unwrap(), Some(run_at));
    // Not claimable before run_at; claimable from then on.
    b.clock.advance(Duration::from_millis(299));
    assert!(
        claim(s, 5, LONG_LEASE).await.is_empty(),
        "claimed before run_at"
    );
    b.clock.advance(Duration::from_millis(1));
    assert_eq!(b.now(), run_at);
    let again = claim(s, 5, LONG_LEASE)
        .await
        .into_iter()
        .next()
        .expect("claimable at run_at");
    assert_eq!((again.job.id.as_str(), again.job.attempts), (&id[..], 2));
}

async fn release_puts_the_job_back(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s, "A", 5).await;
    let id = submit(s, b.job(&t.id)).await;
    let c = claim_one(s, LONG_LEASE).await;
    s.job_release(&id, c.fence).await.unwrap();
    let job = get(s, &t.id, &id).await;
    assert_eq!(job.status, JobStatus::Retrying);
    assert_eq!(job.attempts, 0, "a released attempt does not count");
    assert_eq!(job.error_code.as_deref(), Some("WORKER_SHUTDOWN"));
    assert_eq!(
        statuses(s, &id).await.last().cloned(),
        Some((JobStatus::Retrying, 0, Some("WORKER_SHUTDOWN".to_owned())))
    );
    // The released fence is dead; the job is claimable at once by someone else.
    let late = s.job_finish(&id, c.fence, succeeded(&["late"])).await;
    assert!(matches!(late, Err(StoreError::LeaseLost)), "{late:?}");
    let again = claim_one(s, LONG_LEASE).await;
    assert_eq!((again.job.id.as_str(), again.job.attempts), (&id[..], 1));
    assert!(again.fence > c.fence);
}

// ---- maintenance ----

async fn maintain_rescues_an_expired_lease(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s, "A", 5).await;
    let id = submit(s, b.job(&t.id)).await;
    let c = claim_one(s, TINY_LEASE).await;
    let m = s.job_maintain(b.now() + 1000).await.unwrap();
    assert_eq!(
        m,
        Maintenance {
            rescued: 1,
            ..Default::default()
        }
    );
    let job = get(s, &t.id, &id).await;
    assert_eq!((job.status, job.attempts), (JobStatus::Retrying, 1));
    assert_eq!(job.error_code.as_deref(), Some("WORKER_LOST"));
    assert_eq!(
        statuses(s, &id).await.last().cloned(),
        Some((JobStatus::Retrying, 1, Some("WORKER_LOST".to_owned())))
    );
    assert_eq!(s.job_maintain(b.now() + 1000).await.unwrap().rescued, 0);
    let again = claim_one(s, LONG_LEASE).await;
    assert_eq!((again.job.id.as_str(), again.job.attempts), (&id[..], 2));
    let late = s.job_finish(&id, c.fence, succeeded(&["late"])).await;
    assert!(matches!(late, Err(StoreError::LeaseLost)), "{late:?}");
    s.job_finish(&id, again.fence, succeeded(&["ok"]))
        .await
        .unwrap();
    assert_eq!(get(s, &t.id, &id).await.result_keys, vec!["ok"]);
}

async fn maintain_fails_an_expired_lease_out_of_attempts(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s, "A", 5).await;
    let mut job = b.job(&t.id);
    job.max_attempts = 2;
    let id = submit(s, job).await;
    let c = claim_one(s, TINY_LEASE).await;
    s.job_maintain(b.now() + 1000).await.unwrap();
    let c2 = claim_one(s, TINY_LEASE).await;
    assert_eq!((c2.job.attempts, c2.fence > c.fence), (2, true));
    let m = s.job_maintain(b.now() + 1000).await.unwrap();
    assert_eq!(m.rescued, 1);
    let job = get(s, &t.id, &id).await;
    assert_eq!((job.status, job.attempts), (JobStatus::Failed, 2));
    assert_eq!(job.error_code.as_deref(), Some("WORKER_LOST"));
    assert!(job.finished_at.is_some());
    assert!(claim(s, 5, LONG_LEASE).await.is_empty());
    let late = s.job_finish(&id, c2.fence, succeeded(&["late"])).await;
    assert!(matches!(late, Err(StoreError::LeaseLost)), "{late:?}");
}

async fn maintain_applies_cancel_after(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s, "A", 5).await;
    let now = b.now();
    let with_cancel_at = || {
        let mut job = b.job(&t.id);
        job.cancel_at = Some(now + 10_000);
        job
    };
    let started = submit(s, with_cancel_at()).await;
    let c = claim_one(s, LONG_LEASE).await;
    assert_eq!(c.job.id, started);
    let waiting = submit(s, with_cancel_at()).await;
    assert_eq!(
        s.job_maintain(now + 5_000).await.unwrap(),
        Maintenance::default()
    );
    let m = s.job_maintain(now + 20_000).await.unwrap();
    assert_eq!(
        m,
        Maintenance {
            canceled: 1,
            ..Default::default()
        }
    );
    let job = get(s, &t.id, &waiting).await;
    assert_eq!(job.status, JobStatus::Canceled);
    assert_eq!(job.error_code.as_deref(), Some("CANCEL_AFTER_ELAPSED"));
    assert_eq!(job.finished_at, Some(now + 20_000));
    assert_eq!(
        statuses(s, &waiting).await.last().cloned(),
        Some((
            JobStatus::Canceled,
            0,
            Some("CANCEL_AFTER_ELAPSED".to_owned())
        ))
    );
    // Cancel-After only stops jobs that have not started.
    assert_eq!(get(s, &t.id, &started).await.status, JobStatus::Running);
    s.job_finish(&started, c.fence, succeeded(&["k"]))
        .await
        .unwrap();
}

async fn maintain_fails_jobs_past_their_deadline(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s, "A", 5).await;
    let now = b.now();
    let with_deadline = |deadline_at| {
        let mut job = b.job(&t.id);
        job.deadline_at = deadline_at;
        job
    };
    let running = submit(s, with_deadline(now + 10_000)).await;
    let retrying = submit(s, with_deadline(now + 10_000)).await;
    let queued = submit(s, with_deadline(now + 10_000)).await;
    let later = submit(s, with_deadline(now + 60_000)).await;
    let c_running = claim_one(s, LONG_LEASE).await;
    let c_retrying = claim_one(s, LONG_LEASE).await;
    assert_eq!(
        (c_running.job.id.as_str(), c_retrying.job.id.as_str()),
        (&running[..], &retrying[..])
    );
    s.job_finish(&retrying, c_retrying.fence, retry(now + 50_000))
        .await
        .unwrap();
    let m = s.job_maintain(now + 20_000).await.unwrap();
    assert_eq!(
        m,
        Maintenance {
            expired: 3,
            ..Default::default()
        }
    );
    for id in [&running, &retrying, &queued] {
        let job = get(s, &t.id, id).await;
        assert_eq!(job.status, JobStatus::Failed, "{id}");
        assert_eq!(job.error_code.as_deref(), Some("JOB_TIMEOUT"), "{id}");
        assert_eq!(job.finished_at, Some(now + 20_000));
        let last = s.job_events(id).await.unwrap().pop().unwrap();
        assert_eq!(last.status, JobStatus::Failed);
        assert_eq!(last.error_code.as_deref(), Some("JOB_TIMEOUT"));
    }
    assert_eq!(get(s, &t.id, &later).await.status, JobStatus::Queued);
    // The running attempt's fence is dead: no late result, no heartbeat.
    let late = s
        .job_finish(&running, c_running.fence, succeeded(&["late"]))
        .await;
    assert!(matches!(late, Err(StoreError::LeaseLost)), "{late:?}");
    let hb = s.job_heartbeat(&running, c_running.fence, LONG_LEASE).await;
    assert!(matches!(hb, Err(StoreError::LeaseLost)), "{hb:?}");
    assert_eq!(
        get(s, &t.id, &running).await.result_keys,
        Vec::<String>::new()
    );
    // Only the job with time left is still claimable.
    let next = claim(s, 5, LONG_LEASE).await;
    let ids: Vec<&str> = next.iter().map(|c| c.job.id.as_str()).collect();
    assert_eq!(ids, vec![&later[..]]);
}

/// Maintenance passes running at once rescue each expired lease exactly once.
async fn concurrent_maintenance_rescues_each_job_once(b: Bundle) {
    let s = b.store.clone();
    let t = tenant(s.as_ref(), "A", 100).await;
    let ids = submit_n(&b, &t.id, 30).await;
    assert_eq!(claim(s.as_ref(), 30, TINY_LEASE).await.len(), 30);
    let later = b.now() + 1000;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let s = s.clone();
        tasks.spawn(async move { s.job_maintain(later).await.expect("maintain") });
    }
    let mut rescued = 0;
    while let Some(m) = tasks.join_next().await {
        rescued += m.expect("maintenance task").rescued;
    }
    assert_eq!(rescued, 30);
    for id in &ids {
        let job = get(s.as_ref(), &t.id, id).await;
        assert_eq!((job.status, job.attempts), (JobStatus::Retrying, 1), "{id}");
        let retrying = statuses(s.as_ref(), id)
            .await
            .into_iter()
            .filter(|(st, _, _)| *st == JobStatus::Retrying)
            .count();
        assert_eq!(retrying, 1, "one RETRYING event for {id}");
    }
}

// ---- queue position, next run, idempotency purge, reset ----

async fn queue_position_counts_waiting_jobs_ahead(b: Bundle) {
    let s = b.store.as_ref();
    let a = tenant(s, "A", 100).await;
    let other = tenant(s, "B", 100).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let t = if i % 2 == 0 { &a } else { &other };
        ids.push((t.id.clone(), submit(s, b.job(&t.id)).await));
    }
    for (expected, (tenant_id, id)) in ids.iter().enumerate() {
        let job = get(s, tenant_id, id).await;
        assert_eq!(s.job_queue_position(&job).await.unwrap(), expected as u64);
    }
    // Claiming and canceling jobs ahead moves the last one up.
    let claimed = claim(s, 2, LONG_LEASE).await;
    assert_eq!(claimed.len(), 2);
    assert_eq!(
        s.job_cancel(&ids[2].0, &ids[2].1).await.unwrap(),
        CancelOutcome::Canceled
    );
    let (tenant_id, last) = &ids[4];
    let job = get(s, tenant_id, last).await;
    assert_eq!(s.job_queue_position(&job).await.unwrap(), 1);
}

async fn next_run_at_is_the_earliest_waiting_job(b: Bundle) {
    let s = b.store.as_ref();
    assert_eq!(s.job_next_run_at().await.unwrap(), None);
    let t = tenant(s, "A", 5).await;
    // Both in the past, so both are claimable at once.
    let first_at = b.now() - 10;
    let mut first = b.job(&t.id);
    first.created_at = first_at;
    submit(s, first).await;
    let mut second = b.job(&t.id);
    second.created_at = first_at + 5;
    submit(s, second).await;
    assert_eq!(s.job_next_run_at().await.unwrap(), Some(first_at));
    let c = claim_one(s, LONG_LEASE).await;
    assert_eq!(s.job_next_run_at().await.unwrap(), Some(first_at + 5));
    let c2 = claim_one(s, LONG_LEASE).await;
    assert_eq!(s.job_next_run_at().await.unwrap(), None, "nothing waits");
    let run_at = b.now() + 60_000;
    s.job_finish(&c.job.id, c.fence, retry(run_at))
        .await
        .unwrap();
    s.job_finish(&c2.job.id, c2.fence, retry(run_at + 10))
        .await
        .unwrap();
    assert_eq!(s.job_next_run_at().await.unwrap(), Some(run_at));
}

async fn idempotency_purge_forgets_old_keys(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s, "A", 5).await;
    let now = b.now();
    let keyed = |key: &str, created_at: Millis| {
        let mut job = b.job(&t.id);
        job.created_at = created_at;
        job.idempotency = Some(IdempotencyClaim {
            key: key.into(),
            request_hash: "h".into(),
        });
        job
    };
    let old = submit(s, keyed("old", now - 2 * HOUR)).await;
    let fresh = submit(s, keyed("fresh", now)).await;
    assert_eq!(s.idempotency_purge(now - HOUR).await.unwrap(), 1);
    assert_eq!(s.idempotency_purge(now - HOUR).await.unwrap(), 0);
    // The purged key makes a new job; the kept one still replays.
    let reborn = submit(s, keyed("old", now)).await;
    assert_ne!(reborn, old);
    assert_eq!(
        s.job_submit(keyed("fresh", now)).await.unwrap(),
        SubmitOutcome::Replayed {
            job_id: fresh,
            status: JobStatus::Queued
        }
    );
    // Purging forgets keys, never jobs.
    assert_eq!(get(s, &t.id, &old).await.status, JobStatus::Queued);
}

async fn reset_deletes_everything(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s, "A", 5).await;
    let key = api_key("img_reset_me");
    s.api_key_add(&t.id, key.clone()).await.unwrap();
    s.provider_key_add(NewProviderKey {
        id: "pk_1".into(),
        provider: "gemini".into(),
        secret_sealed: vec![9; 16],
        fingerprint: "sha256:1".into(),
        rpm_limit: 1,
        concurrency_limit: 1,
        endpoint: None,
        priority: 0,
        project: None,
    })
    .await
    .unwrap();
    let id = submit(s, b.job(&t.id)).await;
    submit(s, b.job(&t.id)).await;
    claim_one(s, LONG_LEASE).await;
    s.reset().await.unwrap();
    assert!(s.tenant_list().await.unwrap().is_empty());
    assert!(s.provider_key_list().await.unwrap().is_empty());
    assert!(s.api_key_find(&key.key_hash).await.unwrap().is_none());
    assert_eq!(s.job_get(&t.id, &id).await.unwrap(), None);
    assert!(s.job_events(&id).await.unwrap().is_empty());
    assert_eq!(s.job_next_run_at().await.unwrap(), None);
    assert!(claim(s, 10, LONG_LEASE).await.is_empty());
    // The store works as new afterwards, the same key included.
    let t2 = tenant(s, "B", 5).await;
    s.api_key_add(&t2.id, key.clone()).await.unwrap();
    let id2 = submit(s, b.job(&t2.id)).await;
    assert_eq!(claim_one(s, LONG_LEASE).await.job.id, id2);
}

// ---- job events after a cursor (live streams) ----

/// The tenant's events after 0, once `expected` of them are visible (or 10 s passed). On
/// PostgreSQL a reader only takes events whose transaction is older than every transaction
/// still running in the database (migration 0002), and the tests running alongside keep
/// opening stores, whose migrations are transactions of their own: committed events can show
/// up a moment late, never out of order.
async fn events_once_visible(s: &dyn Store, tenant_id: &str, expected: usize) -> Vec<JobEvent> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = s.job_events_after(tenant_id, None, 0, 100).await.unwrap();
        if events.len() >= expected || Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn events_after_pages_in_id_order_per_tenant_and_job(b: Bundle) {
    let s = b.store.as_ref();
    let a = tenant(s, "A", 5).await;
    let other = tenant(s, "B", 5).await;
    assert_eq!(s.job_events_last_id(&a.id).await.unwrap(), 0);
    assert!(s
        .job_events_after(&a.id, None, 0, 10)
        .await
        .unwrap()
        .is_empty());
    let a1 = submit(s, b.job(&a.id)).await;
    let b1 = submit(s, b.job(&other.id)).await;
    let a2 = submit(s, b.job(&a.id)).await;
    let claimed = claim(s, 10, LONG_LEASE).await;
    for c in &claimed {
        s.job_finish(&c.job.id, c.fence, succeeded(&["k.png"]))
            .await
            .unwrap();
    }
    let all = events_once_visible(s, &a.id, 6).await;
    assert_eq!(all.len(), 6, "{all:?}");
    assert!(all.iter().all(|e| e.tenant_id == a.id));
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "{all:?}");
    assert_eq!(
        s.job_events_last_id(&a.id).await.unwrap(),
        all.last().unwrap().id
    );
    // Paging by the last id seen walks the same list, each event once.
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = s.job_events_after(&a.id, None, after, 4).await.unwrap();
        assert!(page.len() <= 4);
        let Some(last) = page.last() else { break };
        after = last.id;
        paged.extend(page);
    }
    assert_eq!(paged, all);
    // One job: only its events, after the cursor.
    let job = s.job_events_after(&a.id, Some(&a2), 0, 100).await.unwrap();
    assert_eq!(job, s.job_events(&a2).await.unwrap());
    assert_eq!(
        job.iter().map(|e| e.status).collect::<Vec<_>>(),
        [JobStatus::Queued, JobStatus::Running, JobStatus::Succeeded]
    );
    let rest = s
        .job_events_after(&a.id, Some(&a2), job[0].id, 100)
        .await
        .unwrap();
    assert_eq!(rest, job[1..]);
    // Another tenant's job is not visible through this tenant.
    assert!(s
        .job_events_after(&a.id, Some(&b1), 0, 100)
        .await
        .unwrap()
        .is_empty());
    assert!(!s
        .job_events_after(&other.id, Some(&b1), 0, 100)
        .await
        .unwrap()
        .is_empty());
    assert!(all.iter().any(|e| e.job_id == a1));
}

// ---- webhooks: the outbox, the dispatcher's claim, endpoints, logs ----

fn sealed(tag: &str) -> SealedSecret {
    SealedSecret {
        sealed: tag.as_bytes().to_vec(),
        fingerprint: format!("sha256:{tag}"),
    }
}

async fn set_webhook(
    s: &dyn Store,
    tenant_id: &str,
    url: Option<&str>,
    events: WebhookEvents,
) -> bool {
    let set = WebhookSet {
        url: url.map(str::to_owned),
        events,
        secret_if_missing: sealed("first"),
    };
    s.webhook_set(tenant_id, set).await.expect("webhook_set").1
}

async fn deliveries(s: &dyn Store, tenant_id: &str, job_id: Option<&str>) -> Vec<Delivery> {
    s.webhook_deliveries(DeliveryListQuery {
        tenant_id: tenant_id.to_owned(),
        job_id: job_id.map(str::to_owned),
        state: None,
        limit: 100,
        before_seq: None,
    })
    .await
    .expect("webhook_deliveries")
    .items
}

/// Submits a job (with its own webhook URL if given) and runs it to SUCCEEDED.
async fn run_to_success(b: &Bundle, tenant_id: &str, webhook_url: Option<&str>) -> String {
    let s = b.store.as_ref();
    let mut job = b.job(tenant_id);
    job.webhook_url = webhook_url.map(str::to_owned);
    let id = submit(s, job).await;
    let c = claim_one(s, LONG_LEASE).await;
    assert_eq!(c.job.id, id);
    s.job_finish(&id, c.fence, succeeded(&["k/0.png"]))
        .await
        .expect("finish");
    id
}

fn report(b: &Bundle, outcome: AttemptOutcome, code: Option<u16>) -> AttemptReport {
    AttemptReport {
        outcome,
        status_code: code,
        error: code.filter(|c| *c >= 300).map(|c| format!("HTTP {c}")),
        latency_ms: 12,
        at: b.now(),
    }
}

async fn webhook_outbox_follows_status_changes(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s, "A", 5).await;
    // No endpoint: no deliveries, whatever happens.
    let quiet = run_to_success(&b, &t.id, None).await;
    assert!(deliveries(s, &t.id, Some(&quiet)).await.is_empty());
    // The first set creates the secret; later ones keep it.
    assert!(
        set_webhook(
            s,
            &t.id,
            Some("https://a.example/hook"),
            WebhookEvents::Terminal
        )
        .await
    );
    let w = s.webhook_get(&t.id).await.unwrap().expect("endpoint");
    assert_eq!(w.secret, sealed("first"));
    let again = WebhookSet {
        url: Some("https://a.example/hook".into()),
        events: WebhookEvents::Terminal,
        secret_if_missing: sealed("second"),
    };
    let (w2, created) = s.webhook_set(&t.id, again).await.unwrap();
    assert!(!created);
    assert_eq!(w2.secret, sealed("first"));

    let job = run_to_success(&b, &t.id, None).await;
    let d = deliveries(s, &t.id, Some(&job)).await;
    assert_eq!(d.len(), 1, "only the terminal event: {d:?}");
    let d = &d[0];
    assert!(d.id.starts_with("evt_") && d.id.len() == 30, "{}", d.id);
    assert!(d.id[4..]
        .chars()
        .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()));
    assert_eq!(
        (d.status, d.state, d.attempts, d.source),
        (
            JobStatus::Succeeded,
            DeliveryState::Pending,
            0,
            DeliverySource::Tenant
        )
    );
    assert_eq!(d.url, "https://a.example/hook");
    assert_eq!(d.result_keys, vec!["k/0.png".to_owned()]);
    assert_eq!(d.error, None);
    let finished = get(s, &t.id, &job).await.finished_at.expect("finished");
    assert_eq!(d.event_at, finished);

    // A write refused for a lost lease writes no delivery either.
    let lost = submit(s, b.job(&t.id)).await;
    let c = claim_one(s, LONG_LEASE).await;
    let r = s.job_finish(&lost, c.fence + 1, failed("LATE")).await;
    assert!(matches!(r, Err(StoreError::LeaseLost)));
    assert!(deliveries(s, &t.id, Some(&lost)).await.is_empty());
    s.job_finish(&lost, c.fence, failed("BOOM")).await.unwrap();
    let d = deliveries(s, &t.id, Some(&lost)).await;
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0].status, d[0].error.as_deref()),
        (JobStatus::Failed, Some("BOOM happened"))
    );
    assert!(d[0].result_keys.is_empty());

    // A job's own URL wins; a cancel is terminal too.
    let mut own = b.job(&t.id);
    own.webhook_url = Some("https://job.example/x".into());
    let own = submit(s, own).await;
    assert_eq!(
        s.job_cancel(&t.id, &own).await.unwrap(),
        CancelOutcome::Canceled
    );
    let d = deliveries(s, &t.id, Some(&own)).await;
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0].url.as_str(), d[0].source, d[0].status),
        (
            "https://job.example/x",
            DeliverySource::Job,
            JobStatus::Canceled
        )
    );

    // Subscribed to all: every status change, in order.
    set_webhook(s, &t.id, Some("https://a.example/hook"), WebhookEvents::All).await;
    let id = submit(s, b.job(&t.id)).await;
    let c = claim_one(s, LONG_LEASE).await;
    s.job_finish(&id, c.fence, retry(b.now())).await.unwrap();
    let c = claim_one(s, LONG_LEASE).await;
    s.job_finish(&id, c.fence, succeeded(&["a", "b"]))
        .await
        .unwrap();
    let mut d = deliveries(s, &t.id, Some(&id)).await;
    d.reverse();
    let got: Vec<JobStatus> = d.iter().map(|d| d.status).collect();
    assert_eq!(
        got,
        [
            JobStatus::Queued,
            JobStatus::Running,
            JobStatus::Retrying,
            JobStatus::Running,
            JobStatus::Succeeded
        ]
    );
    assert_eq!(d[2].error.as_deref(), Some("429 from upstream"));
    let ids: HashSet<&str> = d.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids.len(), 5, "one event id per delivery");

    // No tenant URL: only jobs with their own URL get deliveries.
    set_webhook(s, &t.id, None, WebhookEvents::Terminal).await;
    let none = run_to_success(&b, &t.id, None).await;
    assert!(deliveries(s, &t.id, Some(&none)).await.is_empty());
    let some = run_to_success(&b, &t.id, Some("https://job.example/y")).await;
    assert_eq!(deliveries(s, &t.id, Some(&some)).await.len(), 1);
    // Unknown tenants have no endpoint to set.
    let r = s
        .webhook_set(
            "ten_missing",
            WebhookSet {
                url: None,
                events: WebhookEvents::All,
                secret_if_missing: sealed("x"),
            },
        )
        .await;
    assert!(matches!(r, Err(StoreError::NotFound)), "{r:?}");
}

async fn webhook_claim_leases_caps_and_completes(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s, "A", 5).await;
    assert_eq!(s.webhook_next_due_at().await.unwrap(), None);
    set_webhook(
        s,
        &t.id,
        Some("https://a.example/hook"),
        WebhookEvents::Terminal,
    )
    .await;
    for _ in 0..3 {
        run_to_success(&b, &t.id, None).await;
    }
    run_to_success(&b, &t.id, Some("https://b.example/hook")).await;
    assert!(s.webhook_next_due_at().await.unwrap().expect("due") <= b.now());
    assert!(s
        .webhook_claim("d1", 0, LONG_LEASE, 2)
        .await
        .unwrap()
        .is_empty());
    // Two to a.example (its cap), one to b.example.
    let first = s.webhook_claim("d1", 10, LONG_LEASE, 2).await.unwrap();
    let mut per_url: HashMap<&str, usize> = HashMap::new();
    for c in &first {
        *per_url.entry(c.delivery.url.as_str()).or_default() += 1;
        assert_eq!(
            (c.delivery.state, c.delivery.attempts),
            (DeliveryState::Delivering, 1)
        );
        assert_eq!(c.secrets, vec![sealed("first")]);
    }
    assert_eq!(per_url["https://a.example/hook"], 2);
    assert_eq!(per_url["https://b.example/hook"], 1);
    // The cap holds across claimers.
    assert!(s
        .webhook_claim("d2", 10, LONG_LEASE, 2)
        .await
        .unwrap()
        .is_empty());
    let a = first
        .iter()
        .find(|c| c.delivery.url.starts_with("https://a."))
        .expect("a");
    let stale = s
        .webhook_complete(
            &a.delivery.id,
            a.claim_token + 1,
            report(&b, AttemptOutcome::Delivered, Some(200)),
        )
        .await;
    assert!(matches!(stale, Err(StoreError::LeaseLost)), "{stale:?}");
    s.webhook_complete(
        &a.delivery.id,
        a.claim_token,
        report(&b, AttemptOutcome::Delivered, Some(204)),
    )
    .await
    .unwrap();
    let done = deliveries(s, &t.id, Some(&a.delivery.job_id)).await;
    assert_eq!(done[0].state, DeliveryState::Succeeded);
    assert_eq!(
        (done[0].last_status_code, done[0].last_latency_ms),
        (Some(204), Some(12))
    );
    assert!(done[0].delivered_at.is_some() && done[0].last_attempt_at.is_some());
    // Recording twice is refused.
    let twice = s
        .webhook_complete(
            &a.delivery.id,
            a.claim_token,
            report(&b, AttemptOutcome::Delivered, Some(200)),
        )
        .await;
    assert!(matches!(twice, Err(StoreError::LeaseLost)));
    // A slot of a.example is free again: the third one goes.
    let third = s.webhook_claim("d2", 10, LONG_LEASE, 2).await.unwrap();
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].delivery.url, "https://a.example/hook");
    // A retry goes back to pending at its time.
    let later = b.now() + HOUR;
    let t3 = &third[0];
    s.webhook_complete(
        &t3.delivery.id,
        t3.claim_token,
        report(
            &b,
            AttemptOutcome::Retry {
                next_attempt_at: later,
            },
            Some(503),
        ),
    )
    .await
    .unwrap();
    let d = deliveries(s, &t.id, Some(&t3.delivery.job_id)).await;
    assert_eq!(
        (d[0].state, d[0].next_attempt_at),
        (DeliveryState::Pending, later)
    );
    assert_eq!(d[0].last_error.as_deref(), Some("HTTP 503"));
    // Failed is final.
    let b_claim = first
        .iter()
        .find(|c| c.delivery.url.starts_with("https://b."))
        .expect("b");
    s.webhook_complete(
        &b_claim.delivery.id,
        b_claim.claim_token,
        report(&b, AttemptOutcome::Failed, Some(500)),
    )
    .await
    .unwrap();
    // The other a.example claim is still in flight under a long lease: nothing is due now.
    let lapsing = s.webhook_claim("d3", 10, LONG_LEASE, 5).await.unwrap();
    assert!(lapsing.is_empty(), "nothing due: {lapsing:?}");
    assert!(s.webhook_next_due_at().await.unwrap().expect("due") > b.now());

    let t2 = tenant(s, "B", 5).await;
    set_webhook(
        s,
        &t2.id,
        Some("https://c.example/hook"),
        WebhookEvents::Terminal,
    )
    .await;
    run_to_success(&b, &t2.id, None).await;
    let short = s.webhook_claim("d4", 1, TINY_LEASE, 5).await.unwrap();
    assert_eq!(short.len(), 1);
    b.clock.advance(Duration::from_millis(5));
    assert!(s.webhook_next_due_at().await.unwrap().expect("due") <= b.now());
    let retaken = s.webhook_claim("d5", 1, LONG_LEASE, 5).await.unwrap();
    assert_eq!(retaken.len(), 1);
    assert_eq!(retaken[0].delivery.id, short[0].delivery.id);
    assert_eq!(retaken[0].delivery.attempts, 2);
    assert!(retaken[0].claim_token > short[0].claim_token);
    let late = s
        .webhook_complete(
            &short[0].delivery.id,
            short[0].claim_token,
            report(&b, AttemptOutcome::Delivered, Some(200)),
        )
        .await;
    assert!(matches!(late, Err(StoreError::LeaseLost)), "{late:?}");
}

/// Dispatchers claiming at the same moment never share a delivery, and together never put more
/// than the cap in flight to one URL (on PostgreSQL, separate transactions on separate
/// connections).
async fn concurrent_webhook_claimers_respect_the_per_url_cap(b: Bundle) {
    const CAP: u32 = 3;
    const CLAIMERS: usize = 8;
    let s = b.store.clone();
    let t = tenant(s.as_ref(), "A", 5).await;
    set_webhook(
        s.as_ref(),
        &t.id,
        Some("https://a.example/hook"),
        WebhookEvents::Terminal,
    )
    .await;
    // 16 deliveries to the tenant's URL, 8 to a job's own; a cancel is terminal.
    for i in 0..24 {
        let mut job = b.job(&t.id);
        if i % 3 == 0 {
            job.webhook_url = Some("https://b.example/hook".into());
        }
        let id = submit(s.as_ref(), job).await;
        assert_eq!(
            s.job_cancel(&t.id, &id).await.unwrap(),
            CancelOutcome::Canceled
        );
    }
    let mut sent: HashMap<String, usize> = HashMap::new();
    for round in 0.. {
        // Every claimer claims at once; nothing completes until all have claimed, so each
        // round starts with nothing in flight.
        let barrier = Arc::new(tokio::sync::Barrier::new(CLAIMERS));
        let tasks: Vec<_> = (0..CLAIMERS)
            .map(|i| {
                let (s, barrier) = (s.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    s.webhook_claim(&format!("d{i}"), 4, LONG_LEASE, CAP)
                        .await
                        .expect("webhook_claim")
                })
            })
            .collect();
        let mut claimed = Vec::new();
        for task in tasks {
            claimed.extend(task.await.expect("claimer"));
        }
        if claimed.is_empty() {
            break;
        }
        let mut per_url: HashMap<String, u32> = HashMap::new();
        for c in &claimed {
            *per_url.entry(c.delivery.url.clone()).or_default() += 1;
            *sent.entry(c.delivery.id.clone()).or_default() += 1;
        }
        for (url, n) in &per_url {
            assert!(*n <= CAP, "round {round}: {n} in flight to {url}");
        }
        if round == 0 {
            // Plenty due to both: the claimers together fill both caps.
            assert_eq!(per_url.get("https://a.example/hook"), Some(&CAP));
            assert_eq!(per_url.get("https://b.example/hook"), Some(&CAP));
        }
        for c in claimed {
            s.webhook_complete(
                &c.delivery.id,
                c.claim_token,
                report(&b, AttemptOutcome::Delivered, Some(200)),
            )
            .await
            .expect("webhook_complete");
        }
        assert!(round < 24, "the claims stopped making progress");
    }
    assert_eq!(sent.len(), 24, "every delivery claimed");
    assert!(
        sent.values().all(|n| *n == 1),
        "a delivery was claimed twice"
    );
    let all = deliveries(s.as_ref(), &t.id, None).await;
    assert_eq!(all.len(), 24);
    assert!(all.iter().all(|d| d.state == DeliveryState::Succeeded));
}

/// A dispatcher whose attempt ended records it and takes its next delivery in one call: the
/// slot it freed is under the cap again; a stale token records nothing and claims nothing.
async fn webhook_complete_and_claim_hands_the_slot_on(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s, "A", 5).await;
    set_webhook(
        s,
        &t.id,
        Some("https://a.example/hook"),
        WebhookEvents::Terminal,
    )
    .await;
    for _ in 0..3 {
        run_to_success(&b, &t.id, None).await;
    }
    let next = |max| DeliveryClaim {
        owner: "d1".into(),
        max,
        lease: LONG_LEASE,
        per_endpoint: 1,
    };
    let first = s.webhook_claim("d1", 10, LONG_LEASE, 1).await.unwrap();
    assert_eq!(first.len(), 1, "the cap is one");
    let first = &first[0];
    // A stale token: LeaseLost, and the slot is not handed on.
    let stale = s
        .webhook_complete_and_claim(
            &first.delivery.id,
            first.claim_token + 1,
            report(&b, AttemptOutcome::Delivered, Some(200)),
            &next(1),
        )
        .await;
    assert!(matches!(stale, Err(StoreError::LeaseLost)), "{stale:?}");
    let pending = |all: &[Delivery]| {
        all.iter()
            .filter(|d| d.state == DeliveryState::Pending)
            .count()
    };
    assert_eq!(pending(&deliveries(s, &t.id, None).await), 2);
    // Recorded, and the next one taken in the slot it freed (the cap of one holds).
    let second = s
        .webhook_complete_and_claim(
            &first.delivery.id,
            first.claim_token,
            report(&b, AttemptOutcome::Delivered, Some(200)),
            &next(5),
        )
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert_ne!(second[0].delivery.id, first.delivery.id);
    assert_eq!(second[0].delivery.state, DeliveryState::Delivering);
    assert_eq!(second[0].secrets, vec![sealed("first")]);
    let all = deliveries(s, &t.id, None).await;
    let state_of = |id: &str| all.iter().find(|d| d.id == id).expect("delivery").state;
    assert_eq!(state_of(&first.delivery.id), DeliveryState::Succeeded);
    assert_eq!(pending(&all), 1);
    // Nothing more asked for: recorded, nothing claimed.
    let none = s
        .webhook_complete_and_claim(
            &second[0].delivery.id,
            second[0].claim_token,
            report(&b, AttemptOutcome::Delivered, Some(200)),
            &next(0),
        )
        .await
        .unwrap();
    assert!(none.is_empty());
    let all = deliveries(s, &t.id, None).await;
    assert_eq!(pending(&all), 1);
    assert_eq!(
        all.iter()
            .filter(|d| d.state == DeliveryState::Succeeded)
            .count(),
        2
    );
}

/// Deliveries that ended (succeeded, failed, disabled) are deleted once they ended before the
/// cut-off, oldest first, at most `limit` a call; pending and in-flight ones never are, however
/// old, and stay claimable.
async fn webhook_purge_deletes_ended_deliveries_only(b: Bundle) {
    let s = b.store.as_ref();
    let start = b.now();
    let t = tenant(s, "A", 5).await;
    set_webhook(s, &t.id, None, WebhookEvents::Terminal).await;
    // One delivery per kind, each to its own URL (a 410 sweeps only its own URL).
    for kind in ["ok1", "ok2", "fail", "gone", "retry", "slow"] {
        run_to_success(&b, &t.id, Some(&format!("https://{kind}.example/hook"))).await;
    }
    let claimed = s.webhook_claim("d1", 10, LONG_LEASE, 5).await.unwrap();
    assert_eq!(claimed.len(), 6);
    let kind_of = |url: &str| {
        url.trim_start_matches("https://")
            .split('.')
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    let mut ids: HashMap<String, String> = HashMap::new();
    // ok1 ends first, so it is the oldest.
    let mut claimed = claimed;
    claimed.sort_by_key(|c| kind_of(&c.delivery.url) != "ok1");
    for c in &claimed {
        let kind = kind_of(&c.delivery.url);
        ids.insert(kind.clone(), c.delivery.id.clone());
        let outcome = match kind.as_str() {
            "ok1" | "ok2" => (AttemptOutcome::Delivered, 200),
            "fail" => (AttemptOutcome::Failed, 500),
            "gone" => (AttemptOutcome::Gone, 410),
            "retry" => (
                AttemptOutcome::Retry {
                    next_attempt_at: b.now() + HOUR,
                },
                503,
            ),
            _ => continue, // "slow": still in flight
        };
        s.webhook_complete(
            &c.delivery.id,
            c.claim_token,
            report(&b, outcome.0, Some(outcome.1)),
        )
        .await
        .unwrap();
        if kind == "ok1" {
            b.clock.advance(Duration::from_millis(5));
        }
    }
    // Never attempted: pending and due.
    run_to_success(&b, &t.id, Some("https://later.example/hook")).await;
    let state_by_kind = |all: &[Delivery]| -> HashMap<String, DeliveryState> {
        all.iter().map(|d| (kind_of(&d.url), d.state)).collect()
    };
    assert_eq!(deliveries(s, &t.id, None).await.len(), 7);

    // Nothing ended before the test began.
    assert_eq!(s.webhook_purge(start, 100).await.unwrap(), 0);
    // A batch of one: the oldest.
    let cutoff = b.now() + HOUR;
    assert_eq!(s.webhook_purge(cutoff, 1).await.unwrap(), 1);
    let left = state_by_kind(&deliveries(s, &t.id, None).await);
    assert!(
        !left.contains_key("ok1") && left.contains_key("ok2"),
        "{left:?}"
    );
    // Then the other ended ones; then nothing.
    assert_eq!(s.webhook_purge(cutoff, 100).await.unwrap(), 3);
    assert_eq!(s.webhook_purge(cutoff, 100).await.unwrap(), 0);
    let left = state_by_kind(&deliveries(s, &t.id, None).await);
    assert_eq!(
        left,
        HashMap::from([
            ("retry".to_owned(), DeliveryState::Pending),
            ("slow".to_owned(), DeliveryState::Delivering),
            ("later".to_owned(), DeliveryState::Pending),
        ])
    );
    assert_eq!(
        s.webhook_replay(&t.id, &ids["ok1"]).await.unwrap(),
        ReplayOutcome::NotFound
    );
    // What was kept still works: the pending one is claimed, the in-flight one recorded.
    let later = s.webhook_claim("d2", 10, LONG_LEASE, 5).await.unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(kind_of(&later[0].delivery.url), "later");
    let slow = claimed
        .iter()
        .find(|c| kind_of(&c.delivery.url) == "slow")
        .expect("slow");
    s.webhook_complete(
        &slow.delivery.id,
        slow.claim_token,
        report(&b, AttemptOutcome::Delivered, Some(200)),
    )
    .await
    .unwrap();
    assert_eq!(s.webhook_purge(b.now() + HOUR, 100).await.unwrap(), 1);
    let left = state_by_kind(&deliveries(s, &t.id, None).await);
    assert_eq!(
        left,
        HashMap::from([
            ("retry".to_owned(), DeliveryState::Pending),
            ("later".to_owned(), DeliveryState::Delivering),
        ])
    );
}

/// The claim serves the URL due longest first, whatever the URLs' order, and passes over a URL
/// whose pending deliveries are all due later.
async fn webhook_claim_takes_the_url_due_longest_first(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s, "A", 5).await;
    set_webhook(s, &t.id, None, WebhookEvents::Terminal).await;
    // a.example: pending, but not due for an hour.
    run_to_success(&b, &t.id, Some("https://a.example/hook")).await;
    let a = s.webhook_claim("d1", 1, LONG_LEASE, 5).await.unwrap();
    assert_eq!(a.len(), 1);
    s.webhook_complete(
        &a[0].delivery.id,
        a[0].claim_token,
        report(
            &b,
            AttemptOutcome::Retry {
                next_attempt_at: b.now() + HOUR,
            },
            Some(503),
        ),
    )
    .await
    .unwrap();
    // c.example ends before b.example: it has waited longer.
    run_to_success(&b, &t.id, Some("https://c.example/hook")).await;
    b.clock.advance(Duration::from_millis(5));
    run_to_success(&b, &t.id, Some("https://b.example/hook")).await;
    run_to_success(&b, &t.id, Some("https://b.example/hook")).await;
    let urls = |claimed: &[easel::base::webhook::ClaimedDelivery]| -> Vec<String> {
        claimed.iter().map(|c| c.delivery.url.clone()).collect()
    };
    let first = s.webhook_claim("d1", 1, LONG_LEASE, 5).await.unwrap();
    assert_eq!(urls(&first), ["https://c.example/hook"]);
    let rest = s.webhook_claim("d1", 10, LONG_LEASE, 5).await.unwrap();
    assert_eq!(
        urls(&rest),
        ["https://b.example/hook", "https://b.example/hook"]
    );
    assert!(s
        .webhook_claim("d1", 10, LONG_LEASE, 5)
        .await
        .unwrap()
        .is_empty());
}

async fn webhook_gone_disables_the_endpoint(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s, "A", 5).await;
    set_webhook(
        s,
        &t.id,
        Some("https://gone.example/hook"),
        WebhookEvents::Terminal,
    )
    .await;
    let j1 = run_to_success(&b, &t.id, None).await;
    let j2 = run_to_success(&b, &t.id, None).await;
    let j3 = run_to_success(&b, &t.id, Some("https://other.example/hook")).await;
    let c = s.webhook_claim("d1", 1, LONG_LEASE, 1).await.unwrap();
    assert_eq!(c.len(), 1);
    let gone_job = c[0].delivery.job_id.clone();
    assert!(gone_job == j1 || gone_job == j2 || gone_job == j3);
    // Make sure it is the tenant URL that answers 410.
    let c = if c[0].delivery.url == "https://gone.example/hook" {
        c
    } else {
        s.webhook_complete(
            &c[0].delivery.id,
            c[0].claim_token,
            report(&b, AttemptOutcome::Delivered, Some(200)),
        )
        .await
        .unwrap();
        s.webhook_claim("d1", 1, LONG_LEASE, 1).await.unwrap()
    };
    assert_eq!(c[0].delivery.url, "https://gone.example/hook");
    s.webhook_complete(
        &c[0].delivery.id,
        c[0].claim_token,
        report(&b, AttemptOutcome::Gone, Some(410)),
    )
    .await
    .unwrap();
    for job in [&j1, &j2] {
        let d = deliveries(s, &t.id, Some(job)).await;
        assert_eq!(d[0].state, DeliveryState::Disabled, "{job}");
    }
    let other = deliveries(s, &t.id, Some(&j3)).await;
    assert_ne!(other[0].state, DeliveryState::Disabled);
    let w = s.webhook_get(&t.id).await.unwrap().expect("endpoint");
    assert!(!w.enabled);
    assert!(w.disabled_reason.unwrap_or_default().contains("410"));
    // Disabled: new jobs write no delivery to it; a job's own URL still gets one.
    let j4 = run_to_success(&b, &t.id, None).await;
    assert!(deliveries(s, &t.id, Some(&j4)).await.is_empty());
    let j5 = run_to_success(&b, &t.id, Some("https://other.example/hook")).await;
    assert_eq!(deliveries(s, &t.id, Some(&j5)).await.len(), 1);
    // Setting the endpoint again enables it.
    set_webhook(
        s,
        &t.id,
        Some("https://gone.example/hook"),
        WebhookEvents::Terminal,
    )
    .await;
    let w = s.webhook_get(&t.id).await.unwrap().expect("endpoint");
    assert!(w.enabled && w.disabled_reason.is_none());
    let j6 = run_to_success(&b, &t.id, None).await;
    assert_eq!(deliveries(s, &t.id, Some(&j6)).await.len(), 1);
}

async fn webhook_rotation_overlaps_then_drops_the_old_secret(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s, "A", 5).await;
    let r = s
        .webhook_rotate_secret(&t.id, sealed("new"), b.now() + HOUR)
        .await;
    assert!(matches!(r, Err(StoreError::NotFound)), "{r:?}");
    set_webhook(
        s,
        &t.id,
        Some("https://a.example/hook"),
        WebhookEvents::Terminal,
    )
    .await;
    let until = b.now() + HOUR;
    let w = s
        .webhook_rotate_secret(&t.id, sealed("new"), until)
        .await
        .unwrap();
    assert_eq!(w.secret, sealed("new"));
    assert_eq!(w.prev_secret, Some(sealed("first")));
    assert_eq!(w.prev_secret_expires_at, Some(until));
    run_to_success(&b, &t.id, None).await;
    let c = s.webhook_claim("d", 5, LONG_LEASE, 5).await.unwrap();
    assert_eq!(c[0].secrets, vec![sealed("new"), sealed("first")]);
    s.webhook_complete(
        &c[0].delivery.id,
        c[0].claim_token,
        report(&b, AttemptOutcome::Delivered, Some(200)),
    )
    .await
    .unwrap();
    // Rotating again drops "first"; an expired previous secret no longer signs.
    let w = s
        .webhook_rotate_secret(&t.id, sealed("newer"), b.now() - 1)
        .await
        .unwrap();
    assert_eq!(w.prev_secret, Some(sealed("new")));
    run_to_success(&b, &t.id, None).await;
    let c = s.webhook_claim("d", 5, LONG_LEASE, 5).await.unwrap();
    assert_eq!(c[0].secrets, vec![sealed("newer")]);
}

async fn webhook_logs_page_filter_scope_and_replay(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s, "A", 5).await;
    let other = tenant(s, "B", 5).await;
    set_webhook(
        s,
        &t.id,
        Some("https://a.example/hook"),
        WebhookEvents::Terminal,
    )
    .await;
    let mut jobs = Vec::new();
    for _ in 0..5 {
        jobs.push(run_to_success(&b, &t.id, None).await);
    }
    let all = deliveries(s, &t.id, None).await;
    assert_eq!(all.len(), 5);
    // Newest first, pages joined give everything once.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = s
            .webhook_deliveries(DeliveryListQuery {
                tenant_id: t.id.clone(),
                job_id: None,
                state: None,
                limit: 2,
                before_seq: before,
            })
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|d| d.id.clone()));
        if !page.has_more {
            break;
        }
        before = page.items.last().map(|d| d.seq);
    }
    assert_eq!(seen, all.iter().map(|d| d.id.clone()).collect::<Vec<_>>());
    assert_eq!(all.first().unwrap().job_id, jobs[4]);
    // Another tenant sees none of it, and cannot replay it.
    assert!(deliveries(s, &other.id, None).await.is_empty());
    assert_eq!(
        s.webhook_replay(&other.id, &all[0].id).await.unwrap(),
        ReplayOutcome::NotFound
    );
    // Fail one, then replay it: same id, pending now, a fresh budget.
    let c = s.webhook_claim("d", 1, LONG_LEASE, 1).await.unwrap();
    let target = c[0].delivery.id.clone();
    assert_eq!(
        s.webhook_replay(&t.id, &target).await.unwrap(),
        ReplayOutcome::InFlight
    );
    s.webhook_complete(
        &target,
        c[0].claim_token,
        report(&b, AttemptOutcome::Failed, Some(500)),
    )
    .await
    .unwrap();
    let failed_page = s
        .webhook_deliveries(DeliveryListQuery {
            tenant_id: t.id.clone(),
            job_id: None,
            state: Some(DeliveryState::Failed),
            limit: 10,
            before_seq: None,
        })
        .await
        .unwrap();
    assert_eq!(failed_page.items.len(), 1);
    assert_eq!(failed_page.items[0].id, target);
    let ReplayOutcome::Queued(replayed) = s.webhook_replay(&t.id, &target).await.unwrap() else {
        panic!("replay refused");
    };
    assert_eq!(
        (replayed.id.as_str(), replayed.state, replayed.attempts),
        (target.as_str(), DeliveryState::Pending, 0)
    );
    assert!(replayed.next_attempt_at <= b.now());
    assert_eq!(
        replayed.last_status_code,
        Some(500),
        "the log keeps the last attempt"
    );
    // Reset forgets endpoints and deliveries.
    s.reset().await.unwrap();
    assert!(s.webhook_get(&t.id).await.unwrap().is_none());
    assert_eq!(s.webhook_next_due_at().await.unwrap(), None);
    assert!(deliveries(s, &t.id, None).await.is_empty());
}

// ---- node heartbeats ----

async fn node_heartbeats_count_live_nodes(b: Bundle) {
    let s = b.store.as_ref();
    let t0: Millis = 1_000_000;
    assert_eq!(s.nodes_live(0).await.unwrap(), 0);
    s.node_heartbeat("node_a", "api", t0).await.unwrap();
    s.node_heartbeat("node_b", "worker", t0).await.unwrap();
    assert_eq!(s.nodes_live(t0).await.unwrap(), 2, "since is inclusive");
    assert_eq!(s.nodes_live(t0 + 1).await.unwrap(), 0);
    // A later heartbeat keeps a node alive; the other one ages out of the window.
    s.node_heartbeat("node_a", "api+worker", t0 + 5_000)
        .await
        .unwrap();
    assert_eq!(s.nodes_live(t0 + 3_000).await.unwrap(), 1);
    assert_eq!(s.nodes_live(t0).await.unwrap(), 2);
    // A late heartbeat (sent before the one already stored) never moves a node back.
    s.node_heartbeat("node_a", "api", t0 + 4_000).await.unwrap();
    assert_eq!(s.nodes_live(t0 + 4_500).await.unwrap(), 1);
    // A third node, then the purge of the ones gone quiet.
    s.node_heartbeat("node_c", "worker", t0 + 6_000)
        .await
        .unwrap();
    assert_eq!(s.nodes_live(t0 + 3_000).await.unwrap(), 2);
    assert_eq!(s.nodes_purge(t0 + 3_000).await.unwrap(), 1);
    assert_eq!(s.nodes_live(0).await.unwrap(), 2);
    assert_eq!(s.nodes_purge(t0 + 3_000).await.unwrap(), 0);
    // A purged node that comes back counts again.
    s.node_heartbeat("node_b", "worker", t0 + 7_000)
        .await
        .unwrap();
    assert_eq!(s.nodes_live(t0 + 5_000).await.unwrap(), 3);
    s.reset().await.unwrap();
    assert_eq!(s.nodes_live(0).await.unwrap(), 0);
}

/// A node that shuts down cleanly removes its row at once: a successor started within the
/// liveness window is the only live node.
async fn node_remove_forgets_a_node_at_once(b: Bundle) {
    let s = b.store.as_ref();
    let t0: Millis = 1_000_000;
    s.node_heartbeat("node_old", "api+worker", t0)
        .await
        .unwrap();
    s.node_heartbeat("node_other", "worker", t0).await.unwrap();
    assert!(s.node_remove("node_old").await.unwrap());
    assert!(!s.node_remove("node_old").await.unwrap());
    assert!(!s.node_remove("node_never").await.unwrap());
    s.node_heartbeat("node_new", "api+worker", t0 + 1_000)
        .await
        .unwrap();
    assert_eq!(s.nodes_live(t0).await.unwrap(), 2);
    assert_eq!(s.nodes_live(t0 + 1_000).await.unwrap(), 1);
}

// ---- the image library's objects and records ----

fn image_object(tenant_id: &str, hash: &str, created_at: Millis) -> ImageObject {
    let id = format!("obj_{}", ulid());
    ImageObject {
        key: format!("uploads/{tenant_id}/{id}.jpg"),
        thumb_key: format!("uploads/{tenant_id}/{id}_thumb.jpg"),
        id,
        tenant_id: tenant_id.into(),
        content_hash: hash.into(),
        mime: "image/jpeg".into(),
        width: 640,
        height: 480,
        size: 12_345,
        state: ObjectState::Pending,
        holders: 0,
        created_at,
    }
}

fn new_image(owner: &ImageOwner, hash: &str, at: Millis) -> NewImage {
    NewImage {
        id: format!("img_{}", ulid()),
        owner: owner.clone(),
        kind: "uploaded".into(),
        session_id: None,
        original_name: Some("cat.png".into()),
        content_hash: hash.into(),
        created_at: at,
    }
}

async fn images_share_one_object_per_hash_and_tenant(b: Bundle) {
    let s = b.store.as_ref();
    let owner = ImageOwner::user("t1", "u1");
    let hash = "aa".repeat(32);
    let first = image_object("t1", &hash, 1_000);
    s.image_object_begin(first.clone()).await.unwrap();
    assert_eq!(
        s.image_add_existing(new_image(&owner, &hash, 1_000))
            .await
            .unwrap(),
        None,
        "a pending object is not shared"
    );
    let (one, redundant) = s
        .image_add(new_image(&owner, &hash, 1_001), &first.id)
        .await
        .unwrap();
    assert_eq!(redundant, None);
    assert_eq!(one.object.state, ObjectState::Ready);
    assert_eq!((one.object.holders, one.ref_count), (1, 0));
    assert_eq!(one.object.key, first.key);
    assert_eq!(one.original_name.as_deref(), Some("cat.png"));
    assert_eq!(one.owner, owner);

    let two = s
        .image_add_existing(new_image(&owner, &hash, 1_002))
        .await
        .unwrap()
        .expect("the ready object is shared");
    assert_eq!(two.object.id, first.id);
    assert_eq!(two.object.holders, 2);
    assert_eq!(
        s.image_add_existing(new_image(&ImageOwner::tenant("t2"), &hash, 1_003))
            .await
            .unwrap(),
        None,
        "never across tenants"
    );

    // A second upload of the same bytes that wrote its own files: the record goes on the
    // ready object and the late one comes back doomed.
    let late = image_object("t1", &hash, 1_004);
    s.image_object_begin(late.clone()).await.unwrap();
    let (three, redundant) = s
        .image_add(new_image(&ImageOwner::tenant("t1"), &hash, 1_005), &late.id)
        .await
        .unwrap();
    assert_eq!(three.object.id, first.id);
    assert_eq!(three.object.holders, 3);
    let redundant = redundant.expect("the late object is redundant");
    assert_eq!(
        (redundant.id.as_str(), redundant.state),
        (late.id.as_str(), ObjectState::Doomed)
    );
    assert!(s.image_object_forget(&late.id).await.unwrap());
    assert!(matches!(
        s.image_add(new_image(&owner, &hash, 1_006), &late.id).await,
        Err(StoreError::NotFound)
    ));

    let tenant = ImageOwner::tenant("t1");
    assert_eq!(
        s.image_delete(&owner, &one.id).await.unwrap(),
        ImageDeleteOutcome::Deleted(None)
    );
    assert_eq!(
        s.image_delete(&owner, &one.id).await.unwrap(),
        ImageDeleteOutcome::NotFound
    );
    assert_eq!(
        s.image_delete(&tenant, &two.id).await.unwrap(),
        ImageDeleteOutcome::NotFound,
        "the tenant is another owner than its user"
    );
    assert_eq!(
        s.image_delete(&owner, &two.id).await.unwrap(),
        ImageDeleteOutcome::Deleted(None)
    );
    match s.image_delete(&tenant, &three.id).await.unwrap() {
        ImageDeleteOutcome::Deleted(Some(doomed)) => {
            assert_eq!(doomed.id, first.id);
            assert_eq!((doomed.state, doomed.holders), (ObjectState::Doomed, 0));
        }
        other => panic!("the last record dooms the object: {other:?}"),
    }
    assert_eq!(
        s.image_add_existing(new_image(&owner, &hash, 1_007))
            .await
            .unwrap(),
        None,
        "a doomed object is not shared"
    );
    let doomed = s.image_objects_collect(0, 10).await.unwrap();
    assert_eq!(
        doomed.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(),
        vec![first.id.as_str()]
    );
    assert!(s.image_object_forget(&first.id).await.unwrap());
    assert!(!s.image_object_forget(&first.id).await.unwrap());
}

async fn ref_count(s: &dyn Store, owner: &ImageOwner, id: &str) -> u32 {
    s.image_get(owner, id)
        .await
        .unwrap()
        .expect("image")
        .ref_count
}

async fn images_are_scoped_listed_and_counted_by_owner(b: Bundle) {
    let s = b.store.as_ref();
    let alice = ImageOwner::user("t1", "alice");
    let bob = ImageOwner::user("t1", "bob");
    let mut ids = Vec::new();
    for (i, (session, kind)) in [
        (Some("s1"), "uploaded"),
        (Some("s1"), "generated"),
        (None, "uploaded"),
    ]
    .into_iter()
    .enumerate()
    {
        let hash = format!("{i:064}");
        let object = image_object("t1", &hash, 1_000);
        s.image_object_begin(object.clone()).await.unwrap();
        let mut new = new_image(&alice, &hash, 1_000 + i as Millis);
        new.session_id = session.map(str::to_owned);
        new.kind = kind.into();
        let (record, _) = s.image_add(new, &object.id).await.unwrap();
        ids.push(record.id);
    }
    let query = |owner: &ImageOwner, session: Option<&str>, kind: Option<&str>| ImageListQuery {
        owner: owner.clone(),
        session_id: session.map(str::to_owned),
        kind: kind.map(str::to_owned),
        limit: 10,
        offset: 0,
    };
    let listed = |page: Vec<ImageRecord>| page.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let (page, total) = s.image_list(query(&alice, None, None)).await.unwrap();
    assert_eq!(total, 3);
    assert_eq!(
        listed(page),
        vec![ids[2].clone(), ids[1].clone(), ids[0].clone()]
    );
    let (page, total) = s.image_list(query(&alice, Some("s1"), None)).await.unwrap();
    assert_eq!(
        (listed(page), total),
        (vec![ids[1].clone(), ids[0].clone()], 2)
    );
    let (page, total) = s
        .image_list(query(&alice, Some("s1"), Some("uploaded")))
        .await
        .unwrap();
    assert_eq!((listed(page), total), (vec![ids[0].clone()], 1));
    let mut paged = query(&alice, None, None);
    (paged.limit, paged.offset) = (1, 1);
    let (page, total) = s.image_list(paged).await.unwrap();
    assert_eq!((listed(page), total), (vec![ids[1].clone()], 3));
    let (page, total) = s.image_list(query(&bob, None, None)).await.unwrap();
    assert_eq!((page.len(), total), (0, 0));
    assert_eq!(s.image_get(&bob, &ids[0]).await.unwrap(), None);
    assert_eq!(
        s.image_get(&alice, &ids[0]).await.unwrap().map(|r| r.id),
        Some(ids[0].clone())
    );

    // References: all or nothing, per owner, never below 0, and they block a delete.
    let two = vec![ids[0].clone(), ids[1].clone()];
    assert_eq!(
        s.image_refs(&bob, &two, 1).await.unwrap(),
        two,
        "bob has neither"
    );
    assert!(s.image_refs(&alice, &two, 1).await.unwrap().is_empty());
    assert_eq!(
        s.image_refs(&alice, &[ids[0].clone(), "img_x".into()], 1)
            .await
            .unwrap(),
        vec!["img_x".to_owned()]
    );
    assert_eq!(ref_count(s, &alice, &ids[0]).await, 1);
    assert_eq!(
        s.image_delete(&alice, &ids[0]).await.unwrap(),
        ImageDeleteOutcome::Referenced(1)
    );
    for _ in 0..2 {
        assert!(s.image_refs(&alice, &two, -1).await.unwrap().is_empty());
    }
    assert_eq!(ref_count(s, &alice, &ids[0]).await, 0);
    assert!(matches!(
        s.image_delete(&alice, &ids[0]).await.unwrap(),
        ImageDeleteOutcome::Deleted(Some(_))
    ));
    s.reset().await.unwrap();
    assert_eq!(s.image_get(&alice, &ids[1]).await.unwrap(), None);
    assert!(s
        .image_objects_collect(Millis::MAX, 10)
        .await
        .unwrap()
        .is_empty());
}

async fn image_collect_dooms_pending_objects_a_crash_left(b: Bundle) {
    let s = b.store.as_ref();
    let t0: Millis = 5_000_000;
    let old = image_object("t1", &"cc".repeat(32), t0);
    let fresh = image_object("t1", &"dd".repeat(32), t0 + 1_000);
    s.image_object_begin(old.clone()).await.unwrap();
    s.image_object_begin(fresh.clone()).await.unwrap();
    assert!(s.image_objects_collect(t0, 10).await.unwrap().is_empty());
    let doomed = s.image_objects_collect(t0 + 1, 10).await.unwrap();
    assert_eq!(doomed.len(), 1);
    assert_eq!(
        (doomed[0].id.as_str(), doomed[0].state),
        (old.id.as_str(), ObjectState::Doomed)
    );
    assert_eq!(doomed[0].key, old.key);
    // The upload that began it comes back too late: refused, nothing made ready.
    let owner = ImageOwner::tenant("t1");
    assert!(matches!(
        s.image_add(new_image(&owner, &old.content_hash, t0 + 2), &old.id)
            .await,
        Err(StoreError::NotFound)
    ));
    // The fresh one finishes normally.
    let (record, _) = s
        .image_add(new_image(&owner, &fresh.content_hash, t0 + 2), &fresh.id)
        .await
        .unwrap();
    assert_eq!(record.object.state, ObjectState::Ready);
    assert!(s.image_object_forget(&old.id).await.unwrap());
    assert!(
        !s.image_object_forget(&fresh.id).await.unwrap(),
        "a ready object stays"
    );
    assert!(s
        .image_objects_collect(Millis::MAX, 10)
        .await
        .unwrap()
        .is_empty());
}

async fn concurrent_image_adds_make_one_object_ready(b: Bundle) {
    let owner = ImageOwner::tenant("t1");
    let hash = "ee".repeat(32);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (store, owner, hash) = (b.store.clone(), owner.clone(), hash.clone());
        tasks.push(tokio::spawn(async move {
            let object = image_object("t1", &hash, 1_000 + i);
            store.image_object_begin(object.clone()).await.unwrap();
            store
                .image_add(new_image(&owner, &hash, 2_000 + i), &object.id)
                .await
                .unwrap()
        }));
    }
    let mut kept = HashSet::new();
    let mut redundant = 0;
    for task in tasks {
        let (record, late) = task.await.unwrap();
        kept.insert(record.object.id);
        redundant += usize::from(late.is_some());
    }
    assert_eq!(kept.len(), 1, "every record on one object");
    assert_eq!(redundant, 7);
    let record_object = kept.into_iter().next().unwrap();
    let doomed = b.store.image_objects_collect(0, 100).await.unwrap();
    assert_eq!(doomed.len(), 7);
    assert!(doomed.iter().all(|o| o.id != record_object));
}

// ---- what a job's end writes in its own transaction (migration 0016) ----

/// An image of the tenant's, held once by a job that names it in `inputImageIds`.
async fn held_image(s: &dyn Store, tenant_id: &str, at: Millis) -> (ImageOwner, String) {
    let owner = ImageOwner::tenant(tenant_id);
    let hash = format!("{:064x}", at);
    let object = image_object(tenant_id, &hash, at);
    s.image_object_begin(object.clone()).await.unwrap();
    let (record, _) = s
        .image_add(new_image(&owner, &hash, at), &object.id)
        .await
        .unwrap();
    let missing = s
        .image_refs(&owner, std::slice::from_ref(&record.id), 1)
        .await
        .unwrap();
    assert!(missing.is_empty());
    (owner, record.id)
}

fn followed_job(b: &Bundle, tenant_id: &str, follower: Option<&str>, inputs: &[&String]) -> NewJob {
    let mut job = b.job(tenant_id);
    job.follow_up = follower.map(str::to_owned);
    job.params.input_image_ids = inputs.iter().map(|id| (*id).clone()).collect();
    job
}

async fn claimed_followups(s: &dyn Store) -> Vec<(String, String, u32)> {
    let mut due: Vec<_> = s
        .followups_claim(10, Duration::from_secs(60))
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.job_id, d.follower, d.attempts))
        .collect();
    due.sort();
    due
}

/// Every way a job ends (cancel, a finish, a failure, the deadline) lets go of its input
/// images and, for a job that asked, writes one follow-up row; a claim holds its rows until
/// the hold lapses, a retry waits its backoff, and done removes the row.
async fn job_end_releases_inputs_and_writes_followups(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s, "A", 5).await;
    let now = b.now();
    let (owner, image) = held_image(s, &t.id, now).await;
    s.image_refs(&owner, std::slice::from_ref(&image), 2)
        .await
        .unwrap();
    assert_eq!(ref_count(s, &owner, &image).await, 3);

    let canceled = submit(s, followed_job(&b, &t.id, Some("editor"), &[&image])).await;
    let plain = submit(s, followed_job(&b, &t.id, None, &[&image])).await;
    let broke = submit(s, followed_job(&b, &t.id, Some("photo"), &[&image])).await;
    let mut late = followed_job(&b, &t.id, Some("photo"), &[]);
    late.deadline_at = now + 10_000;
    let late = submit(s, late).await;
    assert_eq!(s.followups_pending().await.unwrap(), 0, "nothing ended yet");
    assert_eq!(
        ref_count(s, &owner, &image).await,
        3,
        "a submit takes nothing"
    );

    assert_eq!(
        s.job_cancel(&t.id, &canceled).await.unwrap(),
        CancelOutcome::Canceled
    );
    assert_eq!(ref_count(s, &owner, &image).await, 2);
    let mut by_id: HashMap<String, ClaimedJob> = claim(s, 10, LONG_LEASE)
        .await
        .into_iter()
        .map(|c| (c.job.id.clone(), c))
        .collect();
    let c_plain = by_id.remove(&plain).expect("plain claimed");
    s.job_finish(&plain, c_plain.fence, succeeded(&["k"]))
        .await
        .unwrap();
    assert_eq!(ref_count(s, &owner, &image).await, 1);
    let c_failed = by_id.remove(&broke).expect("broke claimed");
    s.job_finish(&broke, c_failed.fence, retry(now))
        .await
        .unwrap();
    assert_eq!(
        ref_count(s, &owner, &image).await,
        1,
        "a retry is not an end"
    );
    let c_failed = claim(s, 10, LONG_LEASE).await.pop().expect("reclaimed");
    s.job_finish(&broke, c_failed.fence, failed("UPSTREAM_5XX"))
        .await
        .unwrap();
    assert_eq!(ref_count(s, &owner, &image).await, 0);
    b.clock.advance(Duration::from_secs(20));
    let m = s.job_maintain(b.now()).await.unwrap();
    assert_eq!(m.expired, 1);
    assert_eq!(ref_count(s, &owner, &image).await, 0, "never below zero");

    let mut want = vec![
        (canceled.clone(), "editor".to_owned(), 1),
        (broke.clone(), "photo".to_owned(), 1),
        (late.clone(), "photo".to_owned(), 1),
    ];
    want.sort();
    assert_eq!(s.followups_pending().await.unwrap(), 3);
    assert_eq!(claimed_followups(s).await, want, "one row per followed job");
    assert_eq!(claimed_followups(s).await, vec![], "held by the claim");
    b.clock.advance(Duration::from_secs(61));
    for row in &mut want {
        row.2 = 2;
    }
    assert_eq!(
        claimed_followups(s).await,
        want,
        "a lapsed claim is claimed again"
    );

    s.followup_done(&canceled).await.unwrap();
    s.followup_done(&late).await.unwrap();
    s.followup_retry(&broke, Duration::from_secs(5), "session gone")
        .await
        .unwrap();
    assert_eq!(s.followups_pending().await.unwrap(), 1);
    b.clock.advance(Duration::from_secs(4));
    assert_eq!(
        claimed_followups(s).await,
        vec![],
        "the retry waits its backoff"
    );
    b.clock.advance(Duration::from_secs(1));
    assert_eq!(
        claimed_followups(s).await,
        vec![(broke.clone(), "photo".to_owned(), 3)]
    );
    s.followup_done(&broke).await.unwrap();
    assert_eq!(s.followups_pending().await.unwrap(), 0);
}

/// Midjourney tasks: the origin's status read from the job, lists per account newest first,
/// the waiting count, and the bot's result on the newest unfinished task of a trigger id.
async fn mj_tasks_follow_their_jobs(b: Bundle) {
    use easel::store::midjourney::{MjBotResult, MjTask};
    let s = b.store.as_ref();
    let t = tenant(s, "Mj", 5).await;
    let first = submit(s, b.job(&t.id)).await;
    let second = submit(s, b.job(&t.id)).await;
    let task = |id: &str, job: &str, at: i64| MjTask {
        task_id: id.into(),
        trigger_id: "3935532608".into(),
        tenant_id: t.id.clone(),
        account_id: "key:k1".into(),
        job_id: Some(job.into()),
        task_name: "imagine".into(),
        task_type: "generate".into(),
        image_index: 0,
        msg_id: 1_384_952_701_758_083_308,
        msg_hash: format!("hash-{id}"),
        zoom_out: 0,
        direction: String::new(),
        ref_pic_url: None,
        prompts: "a cat".into(),
        bot_status: None,
        result_url: None,
        attachments: None,
        created_at: at,
        updated_at: at,
    };
    s.mj_task_insert(task("100", &first, 100)).await.unwrap();
    s.mj_task_insert(task("200", &second, 200)).await.unwrap();
    let again = s.mj_task_insert(task("100", &first, 300)).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert_eq!(s.mj_tasks_waiting(&t.id).await.unwrap(), 2);
    assert_eq!(s.mj_tasks_waiting("ten_other").await.unwrap(), 0);
    let c = claim_one(s, LONG_LEASE).await;
    let running = s.mj_tasks_waiting(&t.id).await.unwrap();
    assert_eq!(running, 2, "a running job's task has not finished");
    s.job_finish(&c.job.id, c.fence, succeeded(&["t/j/1-0.png"]))
        .await
        .unwrap();
    assert_eq!(s.mj_tasks_waiting(&t.id).await.unwrap(), 1);
    let done = s.mj_task_get(&t.id, "100").await.unwrap().expect("task");
    assert_eq!(
        (done.status.as_str(), done.task.msg_id),
        ("SUCCESS", 1_384_952_701_758_083_308)
    );
    assert!(s.mj_task_get("ten_other", "100").await.unwrap().is_none());
    let by_hash = s
        .mj_task_by_hash(&t.id, "hash-200")
        .await
        .unwrap()
        .expect("task");
    assert_eq!(by_hash.status, "SUBMITTED");
    let all = s.mj_task_list("key:k1", None, 10, 0).await.unwrap();
    let ids: Vec<_> = all.iter().map(|r| r.task.task_id.as_str()).collect();
    assert_eq!(ids, ["200", "100"]);
    let ok = s
        .mj_task_list("key:k1", Some("SUCCESS"), 10, 5)
        .await
        .unwrap();
    assert_eq!(ok.len(), 1);
    assert!(s
        .mj_task_list("key:k2", None, 10, 0)
        .await
        .unwrap()
        .is_empty());
    // The bot bans the newest SUBMITTED task of the trigger id: "200".
    let hit = s
        .mj_task_bot_result(MjBotResult {
            trigger_id: "3935532608".into(),
            status: "BANNED".into(),
            result_url: None,
            attachments: None,
            msg_id: None,
            msg_hash: None,
            at: 400,
        })
        .await
        .unwrap()
        .expect("hit");
    assert_eq!(
        (hit.task_id.as_str(), hit.job_id.as_deref()),
        ("200", Some(second.as_str()))
    );
    assert_eq!(
        s.mj_task_get(&t.id, "200")
            .await
            .unwrap()
            .expect("t")
            .status,
        "BANNED"
    );
    assert_eq!(s.mj_tasks_waiting(&t.id).await.unwrap(), 0);
    let none = s
        .mj_task_bot_result(MjBotResult {
            trigger_id: "3935532608".into(),
            status: "SUCCESS".into(),
            result_url: Some("https://cdn/x.png".into()),
            attachments: Some("[]".into()),
            msg_id: Some(5),
            msg_hash: Some("h".into()),
            at: 500,
        })
        .await
        .unwrap();
    assert!(none.is_none());
}

/// The `/mj` facade's tasks: scoped to their tenant, listed newest first or (queued) oldest
/// first by their jobs, a MODAL task started or canceled once, notifyHook orders only rising.
async fn mj_proxy_tasks_start_once(b: Bundle) {
    use easel::store::mj_proxy::{
        ProxyDelivery, ProxyFilter, ProxyQueue, ProxyTask, ProxyView, PHASE_CANCEL, PHASE_MODAL,
    };
    let s = b.store.as_ref();
    let t = tenant(s, "MjProxy", 5).await;
    let first = submit(s, b.job(&t.id)).await;
    let later = submit(s, b.job(&t.id)).await;
    let task = |id: &str, job: Option<&str>, at: i64| ProxyTask {
        id: id.into(),
        tenant_id: t.id.clone(),
        job_id: job.map(str::to_owned),
        hash: format!("hash-{id}"),
        action: "IMAGINE".into(),
        phase: job.is_none().then(|| PHASE_MODAL.to_owned()),
        detail: "{}".into(),
        notified: -1,
        created_at: at,
        updated_at: at,
    };
    s.mj_proxy_insert(task("1", Some(&first), 100))
        .await
        .unwrap();
    s.mj_proxy_insert(task("2", Some(&later), 200))
        .await
        .unwrap();
    s.mj_proxy_insert(task("3", None, 300)).await.unwrap();
    s.mj_proxy_insert(task("4", None, 400)).await.unwrap();
    let again = s.mj_proxy_insert(task("1", None, 500)).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert!(s.mj_proxy_get("ten_other", "1").await.unwrap().is_none());
    let ids = |views: Vec<ProxyView>| views.into_iter().map(|v| v.task.id).collect::<Vec<_>>();
    let all = s.mj_proxy_list(&t.id, ProxyFilter::All, 3).await.unwrap();
    // Each listed task comes with its job, as a task's own view shows it.
    let jobs: Vec<_> = all.iter().map(|v| v.job.as_ref().map(|j| &j.id)).collect();
    assert_eq!(jobs, [None, None, Some(&later)]);
    assert_eq!(
        all[2],
        s.mj_proxy_view(&t.id, "2").await.unwrap().expect("view")
    );
    assert_eq!(ids(all), ["4", "3", "2"]);
    let asked: Vec<String> = ["2", "nope", "1", "2"].map(String::from).to_vec();
    let views = s.mj_proxy_views(&t.id, &asked).await.unwrap();
    assert_eq!(
        views[1],
        s.mj_proxy_view(&t.id, "1").await.unwrap().expect("view")
    );
    assert_eq!(
        ids(views),
        ["2", "1", "2"],
        "in the order asked, unknown ids skipped"
    );
    assert!(s
        .mj_proxy_views("ten_other", &asked)
        .await
        .unwrap()
        .is_empty());
    let queued = s
        .mj_proxy_list(&t.id, ProxyFilter::Queued, 10)
        .await
        .unwrap();
    assert_eq!(ids(queued), ["1", "2"]);
    let waiting = |tasks, jobs| ProxyQueue { tasks, jobs };
    assert_eq!(s.mj_proxy_queue(&t.id, 10).await.unwrap(), waiting(2, 2));
    assert_eq!(
        s.mj_proxy_queue(&t.id, 1).await.unwrap(),
        waiting(1, 2),
        "tasks counted up to the limit"
    );
    assert_eq!(
        s.mj_proxy_queue("ten_other", 10).await.unwrap(),
        waiting(0, 2)
    );
    let c = claim_one(s, LONG_LEASE).await;
    assert_eq!(c.job.id, first);
    assert!(s.job_progress(&first, c.fence, 45).await.unwrap());
    let all = s.mj_proxy_list(&t.id, ProxyFilter::All, 10).await.unwrap();
    let running = all.iter().find(|v| v.task.id == "1").expect("task 1");
    assert_eq!(
        running.job.as_ref().map(|j| j.status),
        Some(JobStatus::Running)
    );
    assert_eq!(running.progress, Some(45));
    assert_eq!(
        running,
        &s.mj_proxy_view(&t.id, "1").await.unwrap().expect("view")
    );
    let queued = s
        .mj_proxy_list(&t.id, ProxyFilter::Queued, 10)
        .await
        .unwrap();
    assert_eq!(ids(queued), ["2"]);
    assert_eq!(s.mj_proxy_queue(&t.id, 10).await.unwrap(), waiting(1, 1));
    assert!(s
        .mj_proxy_list("ten_other", ProxyFilter::All, 10)
        .await
        .unwrap()
        .is_empty());

    let job = submit(s, b.job(&t.id)).await;
    assert!(!s
        .mj_proxy_start("ten_other", "3", &job, "{}", 600)
        .await
        .unwrap());
    assert!(s
        .mj_proxy_start(&t.id, "3", &job, r#"{"a":1}"#, 600)
        .await
        .unwrap());
    assert!(!s.mj_proxy_start(&t.id, "3", &job, "{}", 700).await.unwrap());
    let started = s.mj_proxy_get(&t.id, "3").await.unwrap().expect("task");
    assert_eq!(
        (
            started.job_id.as_deref(),
            started.phase,
            started.detail.as_str()
        ),
        (Some(job.as_str()), None, r#"{"a":1}"#)
    );
    assert_eq!(
        s.mj_proxy_by_job(&job).await.unwrap().map(|v| v.task.id),
        Some("3".to_owned())
    );
    assert!(!s.mj_proxy_cancel_modal(&t.id, "3", 800).await.unwrap());
    assert!(s.mj_proxy_cancel_modal(&t.id, "4", 800).await.unwrap());
    assert!(!s.mj_proxy_start(&t.id, "4", &job, "{}", 900).await.unwrap());
    let canceled = s.mj_proxy_get(&t.id, "4").await.unwrap().expect("task");
    assert_eq!(canceled.phase.as_deref(), Some(PHASE_CANCEL));

    // A notifyHook call is an outbox row, written only while the order rises.
    let call = |n: u32| ProxyDelivery {
        id: format!("evt_{n}"),
        job_id: first.clone(),
        tenant_id: t.id.clone(),
        url: "https://hooks.example/mj".into(),
        status: JobStatus::Running,
        body: format!(r#"{{"n":{n}}}"#),
        at: 1000,
    };
    assert!(s.mj_proxy_notify("1", 100, call(1)).await.unwrap());
    assert!(!s.mj_proxy_notify("1", 100, call(2)).await.unwrap());
    assert!(!s.mj_proxy_notify("1", 50, call(3)).await.unwrap());
    assert!(s.mj_proxy_notify("1", 400, call(4)).await.unwrap());
    let page = s
        .webhook_deliveries(DeliveryListQuery {
            tenant_id: t.id.clone(),
            job_id: None,
            state: None,
            limit: 10,
            before_seq: None,
        })
        .await
        .unwrap();
    let bodies: Vec<_> = page.items.iter().map(|d| d.body.clone()).collect();
    assert_eq!(
        bodies,
        [Some(r#"{"n":4}"#.to_owned()), Some(r#"{"n":1}"#.to_owned())]
    );
}

/// A `/mj` submit writes its job and its task in one transaction (neither without the
/// other); a task is read with its job and, while it runs, its progress.
async fn mj_proxy_submit_writes_job_and_task_together(b: Bundle) {
    use easel::base::ledger::{AccountRef, Charge};
    use easel::store::mj_proxy::ProxyTask;
    let s = b.store.as_ref();
    let t = tenant(s, "MjSubmit", 5).await;
    let task = |id: &str, job: &NewJob| ProxyTask {
        id: id.into(),
        tenant_id: t.id.clone(),
        job_id: Some(job.id.clone()),
        hash: format!("hash-{id}"),
        action: "IMAGINE".into(),
        phase: None,
        detail: "{}".into(),
        notified: -1,
        created_at: 100,
        updated_at: 100,
    };
    let (mut a, later) = (b.job(&t.id), b.job(&t.id));
    a.follow_up = Some("mj_proxy".into());
    for (id, job) in [("a", &a), ("b", &later)] {
        let outcome = s.mj_proxy_submit(job.clone(), task(id, job)).await.unwrap();
        assert!(
            matches!(outcome, SubmitOutcome::Created { .. }),
            "{outcome:?}"
        );
    }
    let view = s.mj_proxy_view(&t.id, "b").await.unwrap().expect("view");
    assert_eq!(view.task.job_id.as_deref(), Some(later.id.as_str()));
    let job = view.job.expect("its job");
    assert_eq!((job.status, view.progress), (JobStatus::Queued, None));
    let queue = s.mj_proxy_queue(&t.id, 10).await.unwrap();
    assert_eq!((queue.tasks, queue.jobs), (2, 2));
    assert!(s.mj_proxy_view("ten_other", "b").await.unwrap().is_none());

    // A taken task id writes neither; an account that cannot pay, neither.
    let taken = b.job(&t.id);
    let again = s.mj_proxy_submit(taken.clone(), task("a", &taken)).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert!(s.job_get(&t.id, &taken.id).await.unwrap().is_none());
    let mut unpaid = b.job(&t.id);
    unpaid.charge = Some(Charge {
        account: AccountRef::user(&t.id, "u-no-credit"),
        amount: 5,
    });
    let refused = s.mj_proxy_submit(unpaid.clone(), task("c", &unpaid)).await;
    assert!(
        matches!(refused, Ok(SubmitOutcome::InsufficientCredits { .. })),
        "{refused:?}"
    );
    assert!(s.job_get(&t.id, &unpaid.id).await.unwrap().is_none());
    assert!(s.mj_proxy_get(&t.id, "c").await.unwrap().is_none());

    // Running: the view carries the provider's progress; nothing waits before the next.
    let c = claim_one(s, LONG_LEASE).await;
    assert_eq!(c.job.id, a.id);
    assert_eq!(
        c.job.follow_up.as_deref(),
        Some("mj_proxy"),
        "the claim names it"
    );
    assert!(s.job_progress(&a.id, c.fence, 45).await.unwrap());
    let view = s.mj_proxy_view(&t.id, "a").await.unwrap().expect("view");
    let status = view.job.as_ref().map(|j| j.status);
    assert_eq!(
        (status, view.progress),
        (Some(JobStatus::Running), Some(45))
    );
    let follower = view.job.and_then(|j| j.follow_up);
    assert_eq!(follower.as_deref(), Some("mj_proxy"), "so does a read");
    let queue = s.mj_proxy_queue(&t.id, 10).await.unwrap();
    assert_eq!((queue.tasks, queue.jobs), (1, 1));
}

// ---- one test per (backend, scenario) ----

/// `suite!(backend, factory)` makes a module `backend` with one `#[tokio::test]` per scenario,
/// each on a fresh bundle from `factory` (an `async fn() -> Option<Bundle>`; `None` skips).
macro_rules! suite {
    ($backend:ident, $factory:path) => {
        suite!(@module $backend, $factory;
            tenant_create_and_list,
            job_end_releases_inputs_and_writes_followups,
            api_key_find_by_hash,
            duplicate_key_hash_is_a_conflict,
            provider_keys_add_and_list,
            provider_key_set_enabled_records_why,
            submit_creates_queued_job_and_one_event,
            idempotency_replays_refuses_and_is_per_tenant,
            concurrent_identical_submits_make_one_job,
            job_get_is_scoped_by_tenant,
            list_newest_first_with_filter_and_paging,
            cancel_outcomes,
            cancel_running_fences_out_the_attempt,
            cancel_racing_a_finish_ends_once,
            idempotency_find_answers_before_a_submit,
            tenant_burst_is_kept_and_defaults_to_none,
            claim_bumps_attempt_and_fence_and_sets_lease,
            claim_max_zero_claims_nothing,
            concurrent_claimers_never_share_a_job,
            claim_is_fair_across_tenants,
            claim_respects_tenant_concurrency,
            submit_claimed_starts_the_next_job_only_in_turn,
            tenant_concurrency_holds_through_finishes_and_rescues,
            open_counts_by_status,
            concurrent_claimers_respect_tenant_concurrency,
            claim_finds_runnable_work_behind_many_blocked_tenants,
            heartbeat_extends_lease_and_detects_a_stale_fence,
            progress_rises_as_events_of_the_running_attempt,
            finish_with_a_stale_fence_writes_nothing,
            finish_succeeded_sets_results,
            finish_failed_sets_the_error,
            finish_retry_waits_until_run_at,
            release_puts_the_job_back,
            maintain_rescues_an_expired_lease,
            maintain_fails_an_expired_lease_out_of_attempts,
            maintain_applies_cancel_after,
            maintain_fails_jobs_past_their_deadline,
            concurrent_maintenance_rescues_each_job_once,
            queue_position_counts_waiting_jobs_ahead,
            next_run_at_is_the_earliest_waiting_job,
            idempotency_purge_forgets_old_keys,
            reset_deletes_everything,
            events_after_pages_in_id_order_per_tenant_and_job,
            webhook_outbox_follows_status_changes,
            webhook_claim_leases_caps_and_completes,
            concurrent_webhook_claimers_respect_the_per_url_cap,
            webhook_complete_and_claim_hands_the_slot_on,
            webhook_claim_takes_the_url_due_longest_first,
            webhook_purge_deletes_ended_deliveries_only,
            webhook_gone_disables_the_endpoint,
            webhook_rotation_overlaps_then_drops_the_old_secret,
            webhook_logs_page_filter_scope_and_replay,
            node_heartbeats_count_live_nodes,
            node_remove_forgets_a_node_at_once,
            images_share_one_object_per_hash_and_tenant,
            images_are_scoped_listed_and_counted_by_owner,
            image_collect_dooms_pending_objects_a_crash_left,
            concurrent_image_adds_make_one_object_ready,
            mj_tasks_follow_their_jobs,
            mj_proxy_tasks_start_once,
            mj_proxy_submit_writes_job_and_task_together,
        );
    };
    (@module $backend:ident, $factory:path; $($name:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(bundle) = $factory().await else {
                        eprintln!(
                            "{} skipped: backend not configured (PostgreSQL: set EASEL_TEST_PG_URL)",
                            stringify!($backend)
                        );
                        return;
                    };
                    super::$name(bundle).await;
                }
            )*
        }
    };
}

suite!(sqlite, crate::Bundle::sqlite);

suite!(postgres, crate::Bundle::postgres);

// ---- PostgreSQL only ----

/// `wait_for_work` returns at a NOTIFY from another pool's submit or requeue, and only for
/// its own schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_notify_wakes_a_waiting_worker() {
    let Some((url, schema)) = pg_schema().await else {
        eprintln!("postgres_notify_wakes_a_waiting_worker skipped: EASEL_TEST_PG_URL unset");
        return;
    };
    let settings = pg_settings();
    let waiter = Arc::new(
        PgStore::connect_with_schema(&url, &schema, &settings)
            .await
            .expect("connect"),
    );
    let submitter = PgStore::connect_with_schema(&url, &schema, &settings)
        .await
        .expect("connect");
    let t = tenant(&submitter, "A", 5).await;
    waiter.listen().await.expect("LISTEN");
    // Nothing was notified yet, so the wait sleeps it out.
    let started = Instant::now();
    waiter.wait_for_work(Duration::from_millis(200)).await;
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "woken for nothing"
    );
    // Work in another schema of the same database is not this store's work.
    let other = Bundle::postgres().await.expect("second schema");
    let theirs = tenant(other.store.as_ref(), "B", 5).await;
    submit(other.store.as_ref(), new_job(&theirs.id, now_millis())).await;
    let started = Instant::now();
    waiter.wait_for_work(Duration::from_millis(300)).await;
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "woken by another schema"
    );

    let wait = |waiter: Arc<PgStore>| {
        tokio::spawn(async move {
            let started = Instant::now();
            waiter.wait_for_work(Duration::from_secs(30)).await;
            started.elapsed()
        })
    };
    // A submit from another pool wakes the waiter.
    let waiting = wait(waiter.clone());
    let id = submit(&submitter, new_job(&t.id, now_millis())).await;
    let waited = waiting.await.expect("waiter");
    assert!(waited < Duration::from_secs(5), "not woken: {waited:?}");
    let c = claim_one(waiter.as_ref(), LONG_LEASE).await;
    assert_eq!(c.job.id, id);
    // So does a retry that is runnable at once (a requeue).
    waiter.wait_for_work(Duration::from_millis(1)).await; // spend any leftover wake-up
    let waiting = wait(waiter.clone());
    submitter
        .job_finish(&id, c.fence, retry(now_millis()))
        .await
        .unwrap();
    let waited = waiting.await.expect("waiter");
    assert!(waited < Duration::from_secs(5), "not woken: {waited:?}");
    assert_eq!(claim_one(waiter.as_ref(), LONG_LEASE).await.job.id, id);
}
