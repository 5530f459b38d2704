//! Fair scheduling: a tenant with a deep queue cannot starve a tenant with one job; the
//! single job starts at the very next free slot.

mod common;

use std::time::Duration;

use easel::base::job::JobStatus;
use serde_json::{json, Value};

#[tokio::test]
async fn one_job_is_not_starved_by_ten_thousand_queued() {
    let app = common::spawn_app_with(
        |c| {
            c.worker.concurrency = 4;
            c.providers.local.delay_ms = 150;
        },
        easel::server::Roles::ALL,
    )
    .await;
    let (busy_id, busy_key) = app.new_tenant("busy", 1_000_000, 100).await;
    let (_, small_key) = app.new_tenant("small", 60, 5).await;

    // 10,000 queued jobs for the busy tenant, written straight through the store for speed.
    let store = app.app.store.clone();
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..10_000 {
        let store = store.clone();
        let busy_id = busy_id.clone();
        writes.spawn(async move {
            let now = easel::base::clock::now_millis();
            store
                .job_submit(easel::base::job::NewJob {
                    id: easel::base::job::new_job_id(),
                    tenant_id: busy_id,
                    prompt: format!("busy {i}"),
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
                .expect("submit")
        });
    }
    while writes.join_next().await.is_some() {}
    // Keep the busy tenant's HTTP path honest too.
    assert_eq!(
        app.submit_as(&busy_key, json!({"prompt": "busy http"}), None)
            .await
            .status(),
        202
    );

    // Wait until the worker is full of busy jobs.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let page = store
            .job_list(easel::base::job::JobListQuery {
                tenant_id: busy_id.clone(),
                status: Some(JobStatus::Running),
                limit: 10,
                before_seq: None,
            })
            .await
            .expect("list");
        if page.items.len() == 4 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "worker never filled up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let response = app
        .submit_as(&small_key, json!({"prompt": "just one"}), None)
        .await;
    assert_eq!(response.status(), 202);
    let small_job = response.json::<Value>().await.expect("json")["jobId"]
        .as_str()
        .expect("id")
        .to_owned();
    let small_events = {
        let started = std::time::Instant::now();
        loop {
            let events = store.job_events(&small_job).await.expect("events");
            if events.iter().any(|e| e.status == JobStatus::Running) {
                break events;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the single job never started"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let queued_at = small_events[0].id;
    let running_at = small_events
        .iter()
        .find(|e| e.status == JobStatus::Running)
        .expect("running")
        .id;
    // Busy jobs that started between the small job's submit and its start: at most the ones
    // claimed in the same batch as it (one permit turnover frees one slot; a batch never
    // exceeds the worker's 4 slots).
    let busy_started_between =
        count_running_events_between(&app, &busy_id, queued_at, running_at).await;
    assert!(
        busy_started_between <= 3,
        "{busy_started_between} busy jobs started before the single job"
    );
    app.shutdown().await;
}

async fn count_running_events_between(
    app: &common::TestApp,
    tenant: &str,
    after: i64,
    before: i64,
) -> usize {
    // The audit trail is in the events table; read it through a read-only SQLite connection.
    let db = app.dir.path().join("easel.db");
    let conn = rusqlite::Connection::open(db).expect("open");
    conn.query_row(
        "SELECT count(*) FROM job_events WHERE tenant_id = ?1 AND status = 'RUNNING' AND id > ?2 AND id < ?3",
        rusqlite::params![tenant, after, before],
        |r| r.get::<_, i64>(0),
    )
    .expect("count") as usize
}

/// Submits that start their own jobs and the claim loop share the worker's slots: a burst of
/// both never claims a job that finds no slot (it would sit RUNNING until its lease ran out,
/// then run again as a second attempt).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_submits_runs_every_job_once() {
    let app = common::spawn_app_with(
        |c| {
            c.worker.concurrency = 3;
            c.worker.lease_ms = 60_000;
            c.worker.heartbeat_ms = 20_000;
            c.providers.local.delay_ms = 20;
        },
        easel::server::Roles::ALL,
    )
    .await;
    let key = app.api_key.clone();
    let mut submits = tokio::task::JoinSet::new();
    // Spread over the time the worker needs for them, so that slots free up while submits
    // arrive and jobs wait: both the submits and the claim loop take slots at once.
    for i in 0..150u64 {
        let (http, url, key) = (
            app.http.clone(),
            app.url("/v1/images/generate"),
            key.clone(),
        );
        submits.spawn(async move {
            tokio::time::sleep(Duration::from_millis(i * 4)).await;
            let r = http
                .post(url)
                .bearer_auth(key)
                .json(&json!({"prompt": format!("burst {i}"), "mode": "draft"}))
                .send()
                .await
                .expect("send");
            assert_eq!(r.status(), 202);
            let body: Value = r.json().await.expect("json");
            body["jobId"].as_str().expect("jobId").to_owned()
        });
    }
    let mut ids = Vec::new();
    while let Some(id) = submits.join_next().await {
        ids.push(id.expect("submit"));
    }
    for id in &ids {
        // Far below the lease: a job left without a slot would still be RUNNING here.
        let job = app
            .wait_for(id, &["SUCCEEDED", "FAILED"], Duration::from_secs(20))
            .await;
        assert_eq!(job["status"], "SUCCEEDED", "{job}");
        assert_eq!(job["attempts"], 1, "{job}");
    }
    app.shutdown().await;
}
