//! The `Store` conformance suite for the photo app (scenes, tasks with their jobs and holds,
//! works, settings), run unchanged on SQLite and (with `EASEL_TEST_PG_URL`) PostgreSQL.

use std::sync::Arc;

use easel::base::clock::{now_millis, Millis};
use easel::base::job::{JobParams, JobStatus, Mode, NewJob};
use easel::base::ledger::{AccountRef, Charge, EntryKind, NewEntry};
use easel::store::photo::{
    Scene, SceneQuery, Task, TaskCreated, TaskQuery, Work, WorkPatch, WorkQuery, WorkflowEnd,
};
use easel::store::postgres::PgStore;
use easel::store::sqlite::SqliteStore;
use easel::store::{NewApiKey, NewTenant, Store};
use serde_json::json;

#[path = "common/stores.rs"]
mod stores;

struct Bundle {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

impl Bundle {
    async fn sqlite() -> Option<Bundle> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("easel.db")).expect("open sqlite");
        Some(Bundle {
            store: Arc::new(store),
            _dir: Some(dir),
        })
    }

    async fn postgres() -> Option<Bundle> {
        let (url, schema) = stores::pg_schema().await?;
        let store = PgStore::connect_with_schema(&url, &schema, &stores::pg_settings())
            .await
            .expect("connect to EASEL_TEST_PG_URL");
        Some(Bundle {
            store: Arc::new(store),
            _dir: None,
        })
    }
}

fn ulid() -> String {
    ulid::Ulid::new().to_string().to_lowercase()
}

async fn tenant(store: &dyn Store) -> String {
    let seed = format!("img_{}", ulid());
    store
        .tenant_create(
            NewTenant {
                id: format!("ten_{}", ulid()),
                name: "photo".into(),
                rpm_limit: 60,
                concurrency_limit: 5,
                burst: None,
            },
            NewApiKey {
                id: format!("key_{}", ulid()),
                key_hash: easel::accounts::keys::hash_key(&seed),
                prefix: seed.chars().take(8).collect(),
            },
        )
        .await
        .expect("tenant_create")
        .id
}

async fn gift(store: &dyn Store, tenant_id: &str, user_id: &str, amount: i64) {
    store
        .ledger_post(NewEntry {
            account: AccountRef::user(tenant_id, user_id),
            kind: EntryKind::Gift,
            amount,
            idem_key: format!("gift:{}", ulid()),
            reason: None,
            actor: None,
            at: now_millis(),
        })
        .await
        .expect("gift");
}

fn scene(tenant_id: &str, name: &str, order: i64, at: Millis) -> Scene {
    Scene {
        scene_id: ulid(),
        tenant_id: tenant_id.into(),
        scene_name: name.into(),
        category: "studio".into(),
        description: Some(format!("{name} light")),
        prompt_template: "a {{style}} portrait".into(),
        cover_image: None,
        parameters: Some(json!({"style": "warm"})),
        tags: None,
        status: "active".into(),
        display_order: order,
        created_at: at,
        updated_at: at,
    }
}

fn task(tenant_id: &str, user_id: &str, n: i64) -> Task {
    let now = now_millis();
    Task {
        task_id: ulid(),
        tenant_id: tenant_id.into(),
        user_id: user_id.into(),
        user_seq: 7,
        task_type: "photography".into(),
        status: "pending".into(),
        batch_count: n,
        images: vec!["a.jpg".into()],
        scene_id: None,
        parameters: json!({"style": "warm"}),
        custom_description: None,
        prompt: "a warm portrait".into(),
        credits: n,
        error: None,
        created_at: now,
        updated_at: now,
        completed_at: None,
    }
}

fn jobs(task: &Task) -> Vec<NewJob> {
    (0..task.batch_count)
        .map(|_| NewJob {
            id: format!("job_{}", ulid()),
            tenant_id: task.tenant_id.clone(),
            prompt: task.prompt.clone(),
            mode: Mode::Draft,
            input_image_url: None,
            params: JobParams::default(),
            provider: "local".into(),
            max_attempts: 3,
            created_at: task.created_at,
            cancel_at: None,
            deadline_at: task.created_at + 3_600_000,
            idempotency: None,
            webhook_url: None,
            charge: Some(Charge {
                account: AccountRef::user(&task.tenant_id, &task.user_id),
                amount: 1,
            }),
            follow_up: Some("photo".into()),
        })
        .collect()
}

fn work(task: &Task, status: &str, images: Vec<String>) -> Work {
    let now = now_millis();
    Work {
        work_id: ulid(),
        tenant_id: task.tenant_id.clone(),
        user_id: task.user_id.clone(),
        user_seq: task.user_seq,
        task_id: task.task_id.clone(),
        work_type: task.task_type.clone(),
        status: status.into(),
        images,
        original_images: task.images.clone(),
        parameters: task.parameters.clone(),
        custom_description: None,
        ai_description: None,
        is_public: false,
        is_favorite: false,
        tags: vec![],
        error: None,
        created_at: now,
        updated_at: now,
        completed_at: Some(now),
    }
}

async fn scenes_filter_order_and_delete(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s).await;
    let other = tenant(s).await;
    let now = now_millis();
    let second = scene(&t, "Beach", 2, now);
    let first = scene(&t, "Studio", 1, now);
    let mut hidden = scene(&t, "Old", 0, now);
    hidden.status = "inactive".into();
    for sc in [
        &second,
        &first,
        &hidden,
        &scene(&other, "Elsewhere", 0, now),
    ] {
        s.photo_scene_put(sc.clone()).await.unwrap();
    }
    let query = SceneQuery {
        tenant_id: t.clone(),
        status: Some("active".into()),
        limit: 50,
        ..Default::default()
    };
    let (found, total) = s.photo_scene_list(query.clone()).await.unwrap();
    assert_eq!(total, 2);
    let names: Vec<_> = found.iter().map(|x| x.scene_name.as_str()).collect();
    assert_eq!(names, ["Studio", "Beach"], "display order first");
    assert_eq!(found[0], first, "a scene reads back as written");
    let (found, _) = s
        .photo_scene_list(SceneQuery {
            keyword: Some("BEACH".into()),
            ..query.clone()
        })
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "the keyword matches the name, any case");
    let (found, total) = s
        .photo_scene_list(SceneQuery {
            limit: 1,
            offset: 1,
            ..query.clone()
        })
        .await
        .unwrap();
    assert_eq!((found[0].scene_name.as_str(), total), ("Beach", 2));
    let mut renamed = first.clone();
    renamed.scene_name = "Studio 2".into();
    s.photo_scene_put(renamed).await.unwrap();
    let got = s
        .photo_scene_get(&t, &first.scene_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.scene_name, "Studio 2");
    assert_eq!(
        s.photo_scene_get(&other, &first.scene_id).await.unwrap(),
        None
    );
    assert!(!s.photo_scene_delete(&other, &first.scene_id).await.unwrap());
    assert!(s.photo_scene_delete(&t, &first.scene_id).await.unwrap());
    assert_eq!(s.photo_scene_get(&t, &first.scene_id).await.unwrap(), None);
}

async fn a_task_holds_every_image_or_nothing(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s).await;
    gift(s, &t, "u1", 3).await;
    let big = task(&t, "u1", 4);
    let outcome = s.photo_task_create(big.clone(), jobs(&big)).await.unwrap();
    assert_eq!(
        outcome,
        TaskCreated::Insufficient {
            required: 4,
            available: 3
        }
    );
    assert_eq!(s.photo_task_get(&t, &big.task_id).await.unwrap(), None);
    let account = s.ledger_account("user:u1").await.unwrap().unwrap();
    assert_eq!((account.balance, account.held), (3, 0), "nothing held");

    let small = task(&t, "u1", 3);
    let made = jobs(&small);
    assert_eq!(
        s.photo_task_create(small.clone(), made.clone())
            .await
            .unwrap(),
        TaskCreated::Created
    );
    let account = s.ledger_account("user:u1").await.unwrap().unwrap();
    assert_eq!(
        (account.balance, account.held),
        (0, 3),
        "one hold per image"
    );
    assert_eq!(
        s.photo_task_get(&t, &small.task_id).await.unwrap(),
        Some(small.clone())
    );
    let task_jobs = s.photo_task_jobs(&small.task_id).await.unwrap();
    let ids: Vec<_> = task_jobs.iter().map(|j| j.job_id.clone()).collect();
    let made_ids: Vec<_> = made.iter().map(|j| j.id.clone()).collect();
    assert_eq!(ids, made_ids, "the jobs in image order");
    assert!(task_jobs.iter().all(|j| j.status == JobStatus::Queued));
    assert_eq!(
        s.photo_task_of_job(&made[1].id)
            .await
            .unwrap()
            .map(|x| x.task_id),
        Some(small.task_id.clone())
    );
    let counts = s.photo_queue_counts(&t).await.unwrap();
    assert_eq!(counts.len(), 1);
    assert_eq!(
        (
            counts[0].task_type.as_str(),
            counts[0].status,
            counts[0].count
        ),
        ("photography", JobStatus::Queued, 3)
    );
    let (listed, total) = s
        .photo_task_list(TaskQuery {
            tenant_id: t.clone(),
            user_id: Some("u1".into()),
            limit: 20,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((listed.len(), total), (1, 1));
    assert!(s.ledger_check().await.unwrap().is_empty());

    // The claim of its first job makes the task `processing` (once; later claims and a task
    // that ended leave it as it is).
    let claimed = s
        .job_claim("w1", 1, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let status = |task: Option<Task>| task.map(|t| t.status);
    let read = s.photo_task_get(&t, &small.task_id).await.unwrap();
    assert_eq!(status(read), Some("processing".to_owned()));
    let (listed, total) = s
        .photo_task_list(TaskQuery {
            tenant_id: t.clone(),
            status: Some("processing".into()),
            limit: 20,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((listed.len(), total), (1, 1));
    assert!(s
        .photo_task_mark(&small.task_id, "cancelled", Some("用户取消"), now_millis())
        .await
        .unwrap());
    let claimed = s
        .job_claim("w1", 1, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let read = s.photo_task_get(&t, &small.task_id).await.unwrap();
    assert_eq!(status(read), Some("cancelled".to_owned()));
}

async fn a_workflow_run_starts_once_and_ends_once(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s).await;
    let tk = task(&t, "u1", 1);
    s.photo_task_create(tk.clone(), vec![]).await.unwrap();
    let id = tk.task_id.as_str();
    assert_eq!(s.photo_workflow_get(id).await.unwrap(), None);
    assert!(s.photo_workflow_begin(&t, id, 5).await.unwrap());
    assert!(
        !s.photo_workflow_begin(&t, id, 6).await.unwrap(),
        "posted once"
    );
    s.photo_workflow_abandon(id).await.unwrap();
    assert!(
        s.photo_workflow_begin(&t, id, 7).await.unwrap(),
        "a failed post is forgotten"
    );
    let end = WorkflowEnd {
        outcome: "completed".into(),
        images: json!([{"url": "data:image/png;base64,aGk=", "batch_index": 1}]),
        ai_description: Some("d".into()),
        error: None,
    };
    assert!(s.photo_workflow_end(id, end.clone(), 8).await.unwrap());
    let second = WorkflowEnd {
        outcome: "failed".into(),
        error: Some("x".into()),
        ..end.clone()
    };
    assert!(
        !s.photo_workflow_end(id, second, 9).await.unwrap(),
        "ends once"
    );
    s.photo_workflow_abandon(id).await.unwrap();
    let run = s.photo_workflow_get(id).await.unwrap().expect("the run");
    assert_eq!(
        (run.outcome.as_deref(), run.posted_at, run.ended_at),
        (Some("completed"), Some(7), Some(8))
    );
    assert_eq!(
        (run.images, run.ai_description),
        (end.images.clone(), Some("d".into()))
    );
    assert_eq!(run.tenant_id, t);

    // A callback for a task that ended (timed out, cancelled) writes nothing.
    let gone = task(&t, "u1", 1);
    s.photo_task_create(gone.clone(), vec![]).await.unwrap();
    assert!(s
        .photo_task_mark(&gone.task_id, "cancelled", Some("用户取消"), now_millis())
        .await
        .unwrap());
    assert!(!s.photo_workflow_end(&gone.task_id, end, 10).await.unwrap());
    assert_eq!(s.photo_workflow_get(&gone.task_id).await.unwrap(), None);
}

async fn a_task_ends_once_with_its_work(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s).await;
    let tk = task(&t, "u1", 1);
    s.photo_task_create(tk.clone(), vec![]).await.unwrap();
    assert!(s
        .photo_task_mark(&tk.task_id, "processing", None, now_millis())
        .await
        .unwrap());
    let first = work(&tk, "completed", vec!["k1".into()]);
    assert!(s
        .photo_task_end(&tk.task_id, "completed", first.clone())
        .await
        .unwrap());
    let again = work(&tk, "failed", vec![]);
    assert!(
        !s.photo_task_end(&tk.task_id, "failed", again)
            .await
            .unwrap(),
        "second end"
    );
    let ended = s.photo_task_get(&t, &tk.task_id).await.unwrap().unwrap();
    assert_eq!(ended.status, "completed");
    assert!(ended.completed_at.is_some());
    assert_eq!(
        s.photo_work_of_task(&tk.task_id).await.unwrap(),
        Some(first.clone())
    );
    assert!(
        !s.photo_task_mark(&tk.task_id, "cancelled", Some("x"), now_millis())
            .await
            .unwrap(),
        "an ended task cannot be cancelled"
    );
}

async fn works_filter_update_and_delete_all_or_nothing(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s).await;
    let mut ids = Vec::new();
    for (user, status) in [
        ("u1", "completed"),
        ("u1", "failed"),
        ("u1", "completed"),
        ("u2", "completed"),
    ] {
        let tk = task(&t, user, 1);
        s.photo_task_create(tk.clone(), vec![]).await.unwrap();
        let w = work(&tk, status, vec!["k".into()]);
        ids.push(w.work_id.clone());
        s.photo_task_end(&tk.task_id, status, w).await.unwrap();
    }
    let mine = WorkQuery {
        tenant_id: t.clone(),
        user_id: Some("u1".into()),
        status: Some("completed".into()),
        limit: 20,
        ..Default::default()
    };
    let (found, total) = s.photo_work_list(mine.clone()).await.unwrap();
    assert_eq!(total, 2);
    assert_eq!(found[0].work_id, ids[2], "newest first");
    let patch = WorkPatch {
        is_public: Some(true),
        tags: Some(vec!["sea".into()]),
        ..Default::default()
    };
    assert_eq!(
        s.photo_work_update(&t, "u2", &ids[0], patch.clone(), now_millis())
            .await
            .unwrap(),
        None,
        "another user's work"
    );
    let updated = s
        .photo_work_update(&t, "u1", &ids[0], patch, now_millis())
        .await
        .unwrap()
        .unwrap();
    assert!(updated.is_public && !updated.is_favorite);
    assert_eq!(updated.tags, ["sea"]);
    let (public, _) = s
        .photo_work_list(WorkQuery {
            user_id: None,
            is_public: Some(true),
            ..mine.clone()
        })
        .await
        .unwrap();
    assert_eq!(public.len(), 1);
    let mixed = vec![ids[0].clone(), ids[3].clone()];
    assert!(!s.photo_works_delete(&t, "u1", &mixed).await.unwrap());
    assert!(
        s.photo_work_get(&t, &ids[0]).await.unwrap().is_some(),
        "nothing deleted"
    );
    let own = vec![ids[0].clone(), ids[1].clone()];
    assert!(s.photo_works_delete(&t, "u1", &own).await.unwrap());
    assert_eq!(s.photo_work_get(&t, &ids[0]).await.unwrap(), None);
    assert_eq!(s.photo_work_get(&t, &ids[1]).await.unwrap(), None);
}

async fn settings_default_until_set(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s).await;
    let list = s.photo_config_list(&t).await.unwrap();
    let credits = list.iter().find(|c| c.key == "default_credits").unwrap();
    assert_eq!(
        (credits.value.as_str(), credits.value_type.as_str()),
        ("10", "number")
    );
    assert!(s
        .photo_config_set(&t, "default_credits", "20", now_millis())
        .await
        .unwrap());
    assert!(!s
        .photo_config_set(&t, "no_such_key", "1", now_millis())
        .await
        .unwrap());
    let list = s.photo_config_list(&t).await.unwrap();
    let credits = list.iter().find(|c| c.key == "default_credits").unwrap();
    assert_eq!(credits.value, "20");
    assert!(list.iter().all(|c| c.key != "no_such_key"));
    let figures = s.photo_overview(&t, 0).await.unwrap();
    assert_eq!(figures.len(), easel::store::photo::OVERVIEW.len());
    assert!(figures.iter().all(|f| *f == 0), "{figures:?}");
    let (orders, total) = s
        .photo_orders(easel::store::photo::OrderListQuery {
            tenant_id: t.clone(),
            status: Some("paid".into()),
            limit: 20,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((orders.len(), total), (0, 0));
    let other = tenant(s).await;
    let theirs = s.photo_config_list(&other).await.unwrap();
    assert_eq!(
        theirs
            .iter()
            .find(|c| c.key == "default_credits")
            .unwrap()
            .value,
        "10"
    );
}

macro_rules! suite {
    ($backend:ident, $factory:path) => {
        mod $backend {
            suite!(@tests $factory;
                scenes_filter_order_and_delete,
                a_task_holds_every_image_or_nothing,
                a_task_ends_once_with_its_work,
                a_workflow_run_starts_once_and_ends_once,
                works_filter_update_and_delete_all_or_nothing,
                settings_default_until_set,
            );
        }
    };
    (@tests $factory:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(bundle) = $factory().await else {
                    eprintln!("skipped: backend not configured (PostgreSQL: set EASEL_TEST_PG_URL)");
                    return;
                };
                super::$name(bundle).await;
            }
        )*
    };
}

suite!(sqlite, crate::Bundle::sqlite);
suite!(postgres, crate::Bundle::postgres);
