//! The ledger end to end, over real HTTP: prepaid job API submits under concurrency (402
//! `INSUFFICIENT_CREDITS`, nothing created), holds settled or released exactly once through
//! upstream faults (5xx until attempts run out, safety blocks) and a worker killed mid-job,
//! the admin API, and `easel ledger check` / `easel mj-users` as commands.

mod common;

use std::process::Command;
use std::time::Duration;

use easel::base::job::JobStatus;
use easel::base::ledger::{AccountRef, EntryKind, EntryQuery};
use easel::testing::fake_gemini::{FakeGemini, Fault, FaultKind};
use serde_json::{json, Value};

const ADMIN_TOKEN: &str = "admin-token-for-tests";

/// Turns prepaid billing on for the app's tenant and gives it `credits`, through the admin
/// API (as an operator would).
async fn prepaid_with(app: &common::TestApp, credits: i64) {
    let billing = app
        .http
        .put(app.url(&format!("/admin/v1/tenants/{}/billing", app.tenant_id)))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"prepaid": true}))
        .send()
        .await
        .expect("billing");
    assert_eq!(billing.status(), 200);
    assert_eq!(
        billing.json::<Value>().await.expect("json")["prepaid"],
        true
    );
    let gift = app
        .http
        .post(app.url(&format!("/admin/v1/tenants/{}/credits", app.tenant_id)))
        .bearer_auth(ADMIN_TOKEN)
        .json(
            &json!({"account": "tenant", "amount": credits, "gift": true,
                      "reason": "test funds", "adminId": "admin_7"}),
        )
        .send()
        .await
        .expect("credits");
    assert_eq!(gift.status(), 201);
    let entry: Value = gift.json().await.expect("json");
    assert_eq!(
        (entry["kind"].clone(), entry["actor"].clone()),
        (json!("gift"), json!("admin_7"))
    );
}

async fn tenant_balance(app: &common::TestApp) -> (i64, i64) {
    let account = AccountRef::tenant(&app.tenant_id);
    let a = app
        .app
        .store
        .ledger_account(&account.id)
        .await
        .expect("account")
        .expect("exists");
    (a.balance, a.held)
}

async fn assert_ledger_adds_up(app: &common::TestApp) {
    let found = app.app.store.ledger_check().await.expect("check");
    assert!(found.is_empty(), "ledger check: {found:?}");
    let over_http: Value = app
        .http
        .get(app.url("/admin/v1/ledger/check"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("check")
        .json()
        .await
        .expect("json");
    assert_eq!(over_http["differences"], json!([]));
}

/// Every entry of the tenant's account with this kind.
async fn entries(app: &common::TestApp, kind: EntryKind) -> Vec<Option<String>> {
    let page = app
        .app
        .store
        .ledger_entries(EntryQuery {
            account_id: AccountRef::tenant(&app.tenant_id).id,
            kinds: vec![kind],
            limit: 1000,
            ..EntryQuery::default()
        })
        .await
        .expect("entries");
    page.items.into_iter().map(|e| e.job_id).collect()
}

fn with_admin(c: &mut easel::config::Config) {
    c.auth.admin_token = Some(easel::base::secret::Secret::new(ADMIN_TOKEN.to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_parallel_submits_for_fifty_credits_accept_exactly_fifty() {
    let app = common::spawn_app_with(with_admin, common::API_ONLY).await;
    // Free until prepaid billing is on.
    assert_eq!(app.submit(json!({"prompt": "free"})).await.status(), 202);
    prepaid_with(&app, 50).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let (http, url, key) = (
            app.http.clone(),
            app.url("/v1/images/generate"),
            app.api_key.clone(),
        );
        tasks.spawn(async move {
            http.post(url)
                .bearer_auth(key)
                .json(&json!({"prompt": format!("paid {i}"), "mode": "draft"}))
                .send()
                .await
                .expect("send")
        });
    }
    let (mut accepted, mut refused) = (0, 0);
    while let Some(response) = tasks.join_next().await {
        let response = response.expect("task");
        match response.status().as_u16() {
            202 => accepted += 1,
            402 => {
                let message = common::expect_error(response, 402, "INSUFFICIENT_CREDITS").await;
                assert!(message.contains("costs 1"), "{message}");
                refused += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((accepted, refused), (50, 50));
    assert_eq!(tenant_balance(&app).await, (0, 50));
    let open = app.app.store.job_open_counts().await.expect("open");
    assert_eq!(
        open.queued, 51,
        "the free job and 50 paid ones; refused ones left nothing"
    );
    // n images cost n credits; an empty account refuses them, and the key is not used up.
    let refused = app
        .submit_as(&app.api_key, json!({"prompt": "x", "n": 2}), Some("idem-1"))
        .await;
    common::expect_error(refused, 402, "INSUFFICIENT_CREDITS").await;
    assert_ledger_adds_up(&app).await;
    app.shutdown().await;
}

async fn gemini_prepaid_app(fake: &FakeGemini) -> common::TestApp {
    let base = fake.base_url.clone();
    let app = common::spawn_app_with(
        move |c| {
            with_admin(c);
            c.providers.default = Some("gemini".into());
            c.providers.gemini.base_url = base;
            c.worker.retry_base_ms = 5;
            c.worker.retry_max_ms = 20;
        },
        easel::server::Roles::ALL,
    )
    .await;
    app.add_gemini_key("k", 60_000, 8).await;
    app
}

async fn run_one(app: &common::TestApp, prompt: &str) -> Value {
    let response = app.submit(json!({"prompt": prompt, "mode": "draft"})).await;
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.expect("json")["jobId"]
        .as_str()
        .expect("id")
        .to_owned();
    app.wait_for(&id, &["SUCCEEDED", "FAILED"], Duration::from_secs(30))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_faults_release_and_successes_settle_exactly_once() {
    let fake = FakeGemini::start().await;
    let app = gemini_prepaid_app(&fake).await;
    prepaid_with(&app, 10).await;
    // 5xx on every attempt: FAILED after max attempts, released once (retries keep the hold).
    fake.set_fault("k", FaultKind::ServerError(503));
    let failed = run_one(&app, "always busy").await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert_eq!(failed["attempts"], 3);
    assert_eq!(tenant_balance(&app).await, (10, 0));
    // A safety block: FAILED (CONTENT_BLOCKED) at once, released once.
    fake.set_fault("k", FaultKind::FinishReason("IMAGE_SAFETY".into()));
    let blocked = run_one(&app, "blocked").await;
    assert_eq!(blocked["errorCode"], "CONTENT_BLOCKED", "{blocked}");
    assert_eq!(tenant_balance(&app).await, (10, 0));
    // Two 5xx, then success: settled once.
    fake.set_fault("k", Fault::from(FaultKind::ServerError(500)).next(2));
    let ok = run_one(&app, "third time lucky").await;
    assert_eq!(ok["status"], "SUCCEEDED", "{ok}");
    assert_eq!(tenant_balance(&app).await, (9, 0));
    let ids = |v: &Value| Some(v["jobId"].as_str().expect("id").to_owned());
    assert_eq!(entries(&app, EntryKind::Release).await.len(), 2);
    let mut released = entries(&app, EntryKind::Release).await;
    released.sort();
    let mut expected = vec![ids(&failed), ids(&blocked)];
    expected.sort();
    assert_eq!(released, expected);
    assert_eq!(entries(&app, EntryKind::Settle).await, vec![ids(&ok)]);
    assert_eq!(entries(&app, EntryKind::Hold).await.len(), 3);
    assert_ledger_adds_up(&app).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_settles_its_hold_once_after_the_rescue() {
    let api = common::spawn_app_with(with_admin, common::API_ONLY).await;
    prepaid_with(&api, 3).await;
    let dir = api.dir.path().to_path_buf();
    // A worker process whose renderer hangs, with a short lease.
    let mut child = common::spawn_worker_process(
        &dir,
        "worker.log",
        &[
            ("EASEL_WORKER__LEASE_MS", "500"),
            ("EASEL_WORKER__HEARTBEAT_MS", "100"),
            ("EASEL_WORKER__POLL_MS", "50"),
            ("EASEL_PROVIDERS__LOCAL__DELAY_MS", "600000"),
            ("EASEL_PROVIDERS__LOCAL__DRAFT_SIZE", "16"),
        ],
    );
    let response = api
        .submit(json!({"prompt": "a heron", "mode": "draft"}))
        .await;
    assert_eq!(response.status(), 202);
    let job_id = response.json::<Value>().await.expect("json")["jobId"]
        .as_str()
        .expect("id")
        .to_owned();
    api.wait_for(&job_id, &["RUNNING"], Duration::from_secs(15))
        .await;
    assert_eq!(tenant_balance(&api).await, (2, 1));
    child.0.kill().expect("SIGKILL the worker");
    child.0.wait().expect("reap");
    // A fresh in-process worker (instant renderer) rescues the lease and finishes the job.
    let stop = api.start_worker();
    let done = api
        .wait_for(&job_id, &["SUCCEEDED", "FAILED"], Duration::from_secs(15))
        .await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_eq!(done["attempts"], 2);
    let trail: Vec<JobStatus> = api
        .app
        .store
        .job_events(&job_id)
        .await
        .expect("events")
        .into_iter()
        .map(|e| e.status)
        .collect();
    assert!(trail.contains(&JobStatus::Retrying), "{trail:?}");
    assert_eq!(tenant_balance(&api).await, (2, 0));
    assert_eq!(
        entries(&api, EntryKind::Settle).await,
        vec![Some(job_id.clone())]
    );
    assert!(entries(&api, EntryKind::Release).await.is_empty());
    assert_ledger_adds_up(&api).await;
    stop.cancel();
    api.shutdown().await;
}

fn easel(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_easel"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("DATABASE_URL")
        .output()
        .expect("run easel")
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn mj_users_and_ledger_check_as_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    assert!(easel(d, &["create-tenant", "default"]).status.success());
    let created = easel(d, &["mj-users", "create", "alice", "5"]);
    assert!(created.status.success(), "{created:?}");
    let text = stdout(&created);
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("app_key: "))
        .expect("app_key line")
        .to_owned();
    assert_eq!(key.len(), 32);
    let lines = |out: &std::process::Output| stdout(out);
    let info = easel(d, &["mj-users", "info", "alice"]);
    assert_eq!(
        lines(&info),
        "user_name: alice\ntoken_total: 5\ntoken_use: 0\n"
    );
    let by_key = easel(d, &["mj-users", "info-key", &key]);
    assert_eq!(lines(&by_key), lines(&info));
    assert!(
        !lines(&by_key).contains(&key),
        "the key is never printed again"
    );
    let updated = easel(d, &["mj-users", "update-tokens", &key, "12"]);
    assert!(lines(&updated).contains("token_total: 12"), "{updated:?}");
    let reset = easel(d, &["mj-users", "reset-usage", &key]);
    assert!(lines(&reset).contains("token_use: 0"), "{reset:?}");
    assert!(!easel(d, &["mj-users", "info", "nobody"]).status.success());
    let check = easel(d, &["ledger", "check"]);
    assert!(check.status.success(), "{check:?}");
    assert!(lines(&check).contains("0 differences"));
    // A cached balance changed behind the ledger's back: the check finds it and fails.
    let db = rusqlite::Connection::open(d.join("easel.db")).expect("open db");
    db.execute("UPDATE ledger_accounts SET balance = balance + 7", [])
        .expect("tamper");
    drop(db);
    let check = easel(d, &["ledger", "check"]);
    assert!(!check.status.success());
    assert!(
        lines(&check).contains("cached balance 19 but the entries sum to 12"),
        "{check:?}"
    );
}
