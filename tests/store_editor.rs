//! The `Store` conformance suite for the editor's sessions, messages and session events, run
//! unchanged on SQLite and (with `EASEL_TEST_PG_URL`) PostgreSQL.

use easel::base::clock::Millis;
use easel::base::image::{ImageObject, ImageOwner, NewImage, ObjectState};
use easel::store::sessions::{MessagePatch, NewMessage, SessionListQuery, SessionOwner};
use easel::store::Store;
use serde_json::json;

#[path = "common/stores.rs"]
mod stores;

// One backend under test: a fresh database and a clock that moves only when told.
use stores::ClockedStore as Bundle;

/// Moves the store's clock on, so each write gets a later time than the last.
fn tick(b: &Bundle) {
    b.clock.advance(std::time::Duration::from_millis(10));
}

fn ulid() -> String {
    ulid::Ulid::new().to_string()
}

fn owner(tenant: &str, user: &str) -> SessionOwner {
    SessionOwner::new(tenant, user)
}

fn message(session_id: &str, text: &str, images: &[&str]) -> NewMessage {
    NewMessage {
        id: ulid(),
        session_id: session_id.to_owned(),
        role: "user".into(),
        text: text.into(),
        params: json!({"model": "x"}),
        image_ids: images.iter().map(|s| s.to_string()).collect(),
        edited_of: None,
        job_id: None,
        answers_job: None,
        auto_title: None,
    }
}

/// An image of `owner` in the library (its object written as ready).
async fn image(store: &dyn Store, owner: &SessionOwner, now: Millis) -> String {
    let object = ImageObject {
        id: ulid(),
        tenant_id: owner.tenant_id.clone(),
        content_hash: ulid(),
        key: format!("k/{}", ulid()),
        thumb_key: format!("t/{}", ulid()),
        mime: "image/jpeg".into(),
        width: 1,
        height: 1,
        size: 1,
        state: ObjectState::Pending,
        holders: 0,
        created_at: now,
    };
    store.image_object_begin(object.clone()).await.unwrap();
    let new = NewImage {
        id: ulid(),
        owner: ImageOwner::user(&owner.tenant_id, &owner.user_id),
        kind: "uploaded".into(),
        session_id: None,
        original_name: None,
        content_hash: object.content_hash.clone(),
        created_at: now,
    };
    let (record, _) = store.image_add(new, &object.id).await.unwrap();
    record.id
}

async fn ref_count(store: &dyn Store, owner: &SessionOwner, id: &str) -> u32 {
    let image_owner = ImageOwner::user(&owner.tenant_id, &owner.user_id);
    store
        .image_get(&image_owner, id)
        .await
        .unwrap()
        .unwrap()
        .ref_count
}

async fn sessions_are_the_owner_s_alone(b: Bundle) {
    let s = b.store.as_ref();
    let alice = owner("t1", "alice");
    let created = s
        .editor_session_create(&alice, &ulid(), None, "New Chat")
        .await
        .unwrap();
    assert_eq!(created.title, "New Chat");
    assert!(created.auto_title);
    assert_eq!(created.message_count, 0);
    for other in [owner("t1", "bob"), owner("t2", "alice")] {
        assert_eq!(
            s.editor_session_get(&other, &created.id).await.unwrap(),
            None
        );
        assert_eq!(
            s.editor_session_rename(&other, &created.id, "x")
                .await
                .unwrap(),
            None
        );
        assert!(!s.editor_session_delete(&other, &created.id).await.unwrap());
        assert!(s
            .editor_message_add(&other, message(&created.id, "hi", &[]))
            .await
            .unwrap()
            .is_none());
        assert_eq!(
            s.editor_events_last_id(&other, &created.id).await.unwrap(),
            None
        );
        let (list, total) = s
            .editor_session_list(SessionListQuery {
                owner: other.clone(),
                q: None,
                limit: 10,
                offset: 0,
            })
            .await
            .unwrap();
        assert!(list.is_empty());
        assert_eq!(total, 0);
    }
    let renamed = s
        .editor_session_rename(&alice, &created.id, "Cats")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renamed.title, "Cats");
    assert!(!renamed.auto_title);
}

async fn list_orders_by_touch_hides_deleted_and_searches(b: Bundle) {
    let s = b.store.as_ref();
    let alice = owner("t1", "alice");
    let first = s
        .editor_session_create(&alice, &ulid(), Some("Red fox"), "New Chat")
        .await
        .unwrap();
    tick(&b);
    let second = s
        .editor_session_create(&alice, &ulid(), None, "New Chat")
        .await
        .unwrap();
    tick(&b);
    let third = s
        .editor_session_create(&alice, &ulid(), Some("gone"), "New Chat")
        .await
        .unwrap();
    tick(&b);
    let mut new = message(&second.id, "a blue 100% BIRD_x", &[]);
    new.auto_title = Some("a blue bird".into());
    s.editor_message_add(&alice, new).await.unwrap().unwrap();
    tick(&b);
    // A message on the first touches it: it comes first now.
    s.editor_message_add(&alice, message(&first.id, "more", &[]))
        .await
        .unwrap()
        .unwrap();
    assert!(s.editor_session_delete(&alice, &third.id).await.unwrap());
    assert_eq!(s.editor_session_get(&alice, &third.id).await.unwrap(), None);
    let query = |q: Option<&str>, limit, offset| SessionListQuery {
        owner: alice.clone(),
        q: q.map(str::to_owned),
        limit,
        offset,
    };
    let (list, total) = s.editor_session_list(query(None, 10, 0)).await.unwrap();
    let ids: Vec<_> = list.iter().map(|x| x.id.clone()).collect();
    assert_eq!(ids, vec![first.id.clone(), second.id.clone()]);
    assert_eq!(total, 2);
    let titled = list.iter().find(|x| x.id == second.id).unwrap();
    assert_eq!(titled.title, "a blue bird");
    assert!(!titled.auto_title);
    let (page, total) = s.editor_session_list(query(None, 1, 1)).await.unwrap();
    assert_eq!(
        (page.len(), total, page[0].id.clone()),
        (1, 2, second.id.clone())
    );
    for (q, want) in [
        ("FOX", vec![first.id.clone()]),
        ("blue", vec![second.id.clone()]),
        ("100%", vec![second.id.clone()]),
        ("d_x", vec![second.id.clone()]),
        ("d_y", vec![]),
        ("%", vec![second.id.clone()]),
        ("x%", vec![]),
        ("gone", vec![]),
    ] {
        let (found, _) = s.editor_session_list(query(Some(q), 10, 0)).await.unwrap();
        let found: Vec<_> = found.into_iter().map(|x| x.id).collect();
        assert_eq!(found, want, "q={q}");
    }
    // A title given at creation is kept.
    let mut named = message(&first.id, "x", &[]);
    named.auto_title = Some("other".into());
    s.editor_message_add(&alice, named).await.unwrap().unwrap();
    let first = s
        .editor_session_get(&alice, &first.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.title, "Red fox");
}

async fn messages_count_order_and_hold_images(b: Bundle) {
    let s = b.store.as_ref();
    let alice = owner("t1", "alice");
    let bob = owner("t1", "bob");
    let mine = image(s, &alice, b.clock_now()).await;
    let theirs = image(s, &bob, b.clock_now()).await;
    let session = s
        .editor_session_create(&alice, &ulid(), None, "New Chat")
        .await
        .unwrap();
    let one = s
        .editor_message_add(
            &alice,
            message(&session.id, "one", &[&mine, &theirs, "nope"]),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        one.image_ids,
        vec![mine.clone(), theirs.clone(), "nope".to_string()]
    );
    assert_eq!(one.params, json!({"model": "x"}));
    assert_eq!(ref_count(s, &alice, &mine).await, 1);
    assert_eq!(ref_count(s, &bob, &theirs).await, 0);
    let two = s
        .editor_message_add(&alice, message(&session.id, "two", &[]))
        .await
        .unwrap()
        .unwrap();
    let three = s
        .editor_message_add(&alice, message(&session.id, "three", &[&mine]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ref_count(s, &alice, &mine).await, 2);
    assert!(one.seq < two.seq && two.seq < three.seq);
    let (page, total) = s
        .editor_message_list(&alice, &session.id, 2, 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(total, 3);
    assert_eq!(
        page.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        ["one", "two"]
    );
    let (page, _) = s
        .editor_message_list(&alice, &session.id, 2, 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        page.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        ["three"]
    );
    assert_eq!(
        s.editor_message_list(&bob, &session.id, 2, 0)
            .await
            .unwrap(),
        None
    );
    assert_eq!(s.editor_message_get(&bob, &one.id).await.unwrap(), None);
    let before = s
        .editor_messages_before(&alice, &session.id, three.seq, 6)
        .await
        .unwrap();
    assert_eq!(
        before.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        ["one", "two"]
    );
    let before = s
        .editor_messages_before(&alice, &session.id, three.seq, 1)
        .await
        .unwrap();
    assert_eq!(
        before.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        ["two"]
    );
    assert!(s
        .editor_messages_before(&bob, &session.id, three.seq, 6)
        .await
        .unwrap()
        .is_empty());

    // An update moves references to the new list; another user cannot update.
    let patch = MessagePatch {
        text: Some("uno".into()),
        params: Some(json!({"k": 1})),
        image_ids: Some(vec![]),
    };
    assert_eq!(
        s.editor_message_update(&bob, &one.id, patch.clone())
            .await
            .unwrap(),
        None
    );
    let updated = s
        .editor_message_update(&alice, &one.id, patch)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (updated.text.as_str(), updated.params.clone()),
        ("uno", json!({"k": 1}))
    );
    assert!(updated.image_ids.is_empty());
    assert_eq!(updated.seq, one.seq);
    assert_eq!(ref_count(s, &alice, &mine).await, 1);
    let text_only = MessagePatch {
        text: Some("tres".into()),
        ..MessagePatch::default()
    };
    let kept = s
        .editor_message_update(&alice, &three.id, text_only)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.image_ids, vec![mine.clone()]);
    assert_eq!(ref_count(s, &alice, &mine).await, 1);

    assert!(!s.editor_message_delete(&bob, &three.id).await.unwrap());
    assert!(s.editor_message_delete(&alice, &three.id).await.unwrap());
    assert!(!s.editor_message_delete(&alice, &three.id).await.unwrap());
    assert_eq!(ref_count(s, &alice, &mine).await, 0);
    let session = s
        .editor_session_get(&alice, &session.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.message_count, 2);
}

async fn answers_are_added_once_and_found_by_job(b: Bundle) {
    let s = b.store.as_ref();
    let alice = owner("t1", "alice");
    let session = s
        .editor_session_create(&alice, &ulid(), None, "New Chat")
        .await
        .unwrap();
    let mut ask = message(&session.id, "draw", &[]);
    ask.job_id = Some("job_1".into());
    let ask = s.editor_message_add(&alice, ask).await.unwrap().unwrap();
    let (found_owner, found) = s.editor_message_of_job("job_1").await.unwrap().unwrap();
    assert_eq!(
        (found_owner, found.id.clone()),
        (alice.clone(), ask.id.clone())
    );
    assert_eq!(s.editor_message_of_job("job_2").await.unwrap(), None);
    let mut answer = message(&session.id, "done", &[]);
    answer.role = "assistant".into();
    answer.answers_job = Some("job_1".into());
    let first = s
        .editor_message_add(&alice, answer.clone())
        .await
        .unwrap()
        .unwrap();
    answer.id = ulid();
    let again = s.editor_message_add(&alice, answer).await.unwrap().unwrap();
    assert_eq!(again.id, first.id);
    let session = s
        .editor_session_get(&alice, &session.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.message_count, 2);
}

async fn events_are_ordered_per_session_and_resumable(b: Bundle) {
    let s = b.store.as_ref();
    let alice = owner("t1", "alice");
    let bob = owner("t1", "bob");
    let session = s
        .editor_session_create(&alice, &ulid(), None, "New Chat")
        .await
        .unwrap();
    assert_eq!(
        s.editor_events_last_id(&alice, &session.id).await.unwrap(),
        Some(0)
    );
    let m = s
        .editor_message_add(&alice, message(&session.id, "a", &[]))
        .await
        .unwrap()
        .unwrap();
    let patch = MessagePatch {
        text: Some("b".into()),
        ..MessagePatch::default()
    };
    s.editor_message_update(&alice, &m.id, patch)
        .await
        .unwrap()
        .unwrap();
    s.editor_event_add(
        &alice,
        &session.id,
        "job_status",
        Some("job_9"),
        Some(json!({"status": "RUNNING"})),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(s
        .editor_event_add(&bob, &session.id, "job_status", None, None)
        .await
        .unwrap()
        .is_none());
    s.editor_session_rename(&alice, &session.id, "T")
        .await
        .unwrap()
        .unwrap();
    assert!(s.editor_message_delete(&alice, &m.id).await.unwrap());
    assert!(s.editor_session_delete(&alice, &session.id).await.unwrap());
    let all = s
        .editor_events_after(&alice, &session.id, 0, 100)
        .await
        .unwrap();
    let kinds: Vec<_> = all.iter().map(|e| (e.id, e.kind.as_str())).collect();
    assert_eq!(
        kinds,
        [
            (1, "message_created"),
            (2, "message_updated"),
            (3, "job_status"),
            (4, "session_updated"),
            (5, "message_deleted"),
            (6, "session_deleted"),
        ]
    );
    assert_eq!(all[0].subject.as_deref(), Some(m.id.as_str()));
    assert_eq!(all[2].detail, Some(json!({"status": "RUNNING"})));
    assert_eq!(
        all[4].detail,
        Some(json!({"id": m.id, "sessionId": session.id}))
    );
    let rest = s
        .editor_events_after(&alice, &session.id, 4, 1)
        .await
        .unwrap();
    assert_eq!(rest.iter().map(|e| e.id).collect::<Vec<_>>(), [5]);
    assert!(s
        .editor_events_after(&bob, &session.id, 0, 100)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        s.editor_events_last_id(&alice, &session.id).await.unwrap(),
        Some(6)
    );
    // A deleted session takes no more changes.
    assert!(s
        .editor_message_add(&alice, message(&session.id, "late", &[]))
        .await
        .unwrap()
        .is_none());
}

async fn reset_forgets_sessions(b: Bundle) {
    let s = b.store.as_ref();
    let alice = owner("t1", "alice");
    let session = s
        .editor_session_create(&alice, &ulid(), None, "New Chat")
        .await
        .unwrap();
    s.editor_message_add(&alice, message(&session.id, "a", &[]))
        .await
        .unwrap()
        .unwrap();
    s.reset().await.unwrap();
    assert_eq!(
        s.editor_session_get(&alice, &session.id).await.unwrap(),
        None
    );
}

impl Bundle {
    fn clock_now(&self) -> Millis {
        use easel::base::clock::WallClock;
        self.clock.now_millis()
    }
}

macro_rules! suite {
    ($backend:ident, $factory:path) => {
        mod $backend {
            suite!(@tests $factory;
                sessions_are_the_owner_s_alone,
                list_orders_by_touch_hides_deleted_and_searches,
                messages_count_order_and_hold_images,
                answers_are_added_once_and_found_by_job,
                events_are_ordered_per_session_and_resumable,
                reset_forgets_sessions,
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
