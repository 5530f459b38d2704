//! The editor's live socket `/ws/{sessionId}`: the origin's messages, the token really
//! verified (1008), every change to every device of the user (two tabs of one user see each
//! other's changes and a job's result; another user sees nothing), resume by last event id,
//! and a change made on one process reaching a socket held by another.

mod common;
#[path = "common/editor.rs"]
mod editor;

use std::time::Duration;

use common::{spawn_app_with, TestApp};
use easel::server::Roles;
use editor::{cheap, id, start, user, Client};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const WAIT: Duration = Duration::from_secs(15);

async fn user_id(client: &Client<'_>) -> String {
    let (status, body) = client.get("/api/auth/me").await;
    assert_eq!(status, 200, "{body}");
    body["user"]["id"].as_str().expect("id").to_owned()
}

async fn connect(app: &TestApp, session: &str, query: &str) -> Ws {
    let url = format!(
        "{}/ws/{session}{query}",
        app.base.replace("http://", "ws://")
    );
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    ws
}

/// A socket of `client` on `session`, past its `connected` message.
async fn device(client: &Client<'_>, session: &str, last_event_id: Option<i64>) -> Ws {
    let uid = user_id(client).await;
    let token = client.token.as_deref().expect("token");
    let resume = last_event_id.map_or(String::new(), |id| format!("&lastEventId={id}"));
    let mut ws = connect(
        client.app,
        session,
        &format!("?userId={uid}&token={token}{resume}"),
    )
    .await;
    let connected = next(&mut ws).await;
    assert_eq!(connected["type"], "connected", "{connected}");
    assert_eq!(connected["sessionId"], json!(session));
    assert_eq!(connected["userId"], json!(uid));
    ws
}

/// The next JSON message (pings skipped); panics on a close or after `WAIT`.
async fn next(ws: &mut Ws) -> Value {
    tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(text.as_str()).expect("json");
                    if value["type"] != "ping" {
                        return value;
                    }
                }
                Some(Ok(Message::Close(frame))) => panic!("closed: {frame:?}"),
                Some(Ok(_)) => continue,
                other => panic!("socket ended: {other:?}"),
            }
        }
    })
    .await
    .expect("a message in time")
}

/// The close code and reason the server sent.
async fn closed(ws: &mut Ws) -> (u16, String) {
    tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (u16::from(frame.code), frame.reason.as_str().to_owned())
                }
                Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return (0, String::new()),
                Some(Ok(_)) => continue,
            }
        }
    })
    .await
    .expect("closed in time")
}

async fn say(ws: &mut Ws, body: Value) {
    ws.send(Message::text(body.to_string()))
        .await
        .expect("send");
}

/// The next change of kind `kind`, skipping others (job statuses, say).
async fn next_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let value = next(ws).await;
        if value["type"] == kind {
            return value;
        }
    }
}

#[tokio::test]
async fn the_token_is_really_verified() {
    let app = start().await;
    let alice = user(&app, "alice@example.com", None).await;
    let bob = user(&app, "bob@example.com", None).await;
    let session = id(&alice.session(None).await);
    let bobs = id(&bob.session(None).await);
    let (alice_id, bob_id) = (user_id(&alice).await, user_id(&bob).await);
    let token = alice.token.clone().unwrap();
    let cases = [
        (
            session.clone(),
            format!("?userId={alice_id}"),
            "Missing authentication",
        ),
        (
            session.clone(),
            format!("?token={token}"),
            "Missing authentication",
        ),
        (session.clone(), String::new(), "Missing authentication"),
        (
            session.clone(),
            format!("?userId={alice_id}&token=not.a.jwt"),
            "Invalid token",
        ),
        (
            session.clone(),
            format!("?userId={bob_id}&token={token}"),
            "Invalid token",
        ),
        (
            bobs.clone(),
            format!("?userId={alice_id}&token={token}"),
            "Session not found",
        ),
        (
            "nope".into(),
            format!("?userId={alice_id}&token={token}"),
            "Session not found",
        ),
    ];
    for (target, query, reason) in cases {
        let mut ws = connect(&app, &target, &query).await;
        assert_eq!(closed(&mut ws).await, (1008, reason.to_owned()), "{query}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn the_origin_s_messages_and_typing_between_tabs() {
    let app = start().await;
    let alice = user(&app, "alice@example.com", None).await;
    let session = id(&alice.session(None).await);
    let mut tab1 = device(&alice, &session, None).await;
    let mut tab2 = device(&alice, &session, None).await;
    say(
        &mut tab1,
        json!({"type": "join_session", "payload": {"sessionId": session}}),
    )
    .await;
    let joined = next(&mut tab1).await;
    assert_eq!(
        (joined["type"].clone(), joined["sessionId"].clone()),
        (json!("joined_session"), json!(session))
    );
    assert!(joined["timestamp"].is_string());
    say(
        &mut tab1,
        json!({"type": "typing", "payload": {"sessionId": session, "isTyping": true}}),
    )
    .await;
    let typing = next(&mut tab2).await;
    assert_eq!(typing["type"], "user_typing");
    assert_eq!(typing["userId"], json!(user_id(&alice).await));
    assert_eq!(typing["isTyping"], true);
    // Not echoed to the sender: its next message answers what it sends next.
    say(
        &mut tab1,
        json!({"type": "leave_session", "payload": {"sessionId": session}}),
    )
    .await;
    assert_eq!(next(&mut tab1).await["type"], "left_session");
    say(&mut tab1, json!({"type": "pong"})).await;
    say(&mut tab1, json!({"type": "whatever", "payload": {}})).await;
    ws_text(&mut tab1, "{not json").await;
    assert_eq!(
        next(&mut tab1).await,
        json!({"type": "error", "message": "Invalid message format"})
    );
    say(&mut tab1, json!({"type": "typing"})).await;
    assert_eq!(
        next(&mut tab1).await,
        json!({"type": "error", "message": "Invalid message format"})
    );
    app.shutdown().await;
}

async fn ws_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text.to_owned())).await.expect("send");
}

#[tokio::test]
async fn every_device_sees_every_change_and_another_user_nothing() {
    let app = start().await;
    let alice = user(&app, "alice@example.com", None).await;
    let bob = user(&app, "bob@example.com", None).await;
    let session = id(&alice.session(None).await);
    let bobs = id(&bob.session(None).await);
    let mut phone = device(&alice, &session, None).await;
    let mut laptop = device(&alice, &session, None).await;
    let mut bobs_tab = device(&bob, &bobs, None).await;

    let message = alice.message(&session, "hello from the phone", &[]).await;
    for ws in [&mut phone, &mut laptop] {
        let created = next(ws).await;
        assert_eq!(created["type"], "message_created", "{created}");
        assert_eq!(created["eventId"], 1);
        assert_eq!(created["message"]["text"], "hello from the phone");
        assert_eq!(created["message"]["id"], message["id"]);
    }
    let (status, _) = alice
        .put(
            &format!("/api/messages/{}", id(&message)),
            json!({"text": "edited"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = alice
        .put(
            &format!("/api/sessions/{session}"),
            json!({"title": "Renamed"}),
        )
        .await;
    assert_eq!(status, 200);
    for ws in [&mut phone, &mut laptop] {
        let updated = next(ws).await;
        assert_eq!(
            (updated["type"].clone(), updated["message"]["text"].clone()),
            (json!("message_updated"), json!("edited"))
        );
        let renamed = next(ws).await;
        assert_eq!(
            (renamed["type"].clone(), renamed["session"]["title"].clone()),
            (json!("session_updated"), json!("Renamed"))
        );
    }

    // A job's progress and its result reach both devices.
    let (status, body) = alice
        .post(
            &format!("/api/sessions/{session}/messages"),
            json!({"role": "user", "text": "a lighthouse", "generate": true}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let job_id = body["jobId"].clone();
    for ws in [&mut phone, &mut laptop] {
        let asked = next(ws).await;
        assert_eq!(
            (asked["type"].clone(), asked["message"]["jobId"].clone()),
            (json!("message_created"), job_id.clone())
        );
        let queued = next(ws).await;
        assert_eq!(
            (
                queued["type"].clone(),
                queued["status"].clone(),
                queued["jobId"].clone()
            ),
            (json!("job_status"), json!("QUEUED"), job_id.clone())
        );
        let done = next(ws).await;
        assert_eq!(
            (done["type"].clone(), done["status"].clone()),
            (json!("job_status"), json!("SUCCEEDED")),
            "{done}"
        );
        let answer = next(ws).await;
        assert_eq!(answer["type"], "message_created");
        assert_eq!(answer["message"]["role"], "assistant");
        assert_eq!(answer["message"]["jobId"], job_id);
        assert_eq!(answer["message"]["images"].as_array().unwrap().len(), 1);
    }
    let (status, _) = alice
        .delete(&format!("/api/messages/{}", id(&message)))
        .await;
    assert_eq!(status, 200);
    for ws in [&mut phone, &mut laptop] {
        let deleted = next(ws).await;
        assert_eq!(
            (deleted["type"].clone(), deleted["messageId"].clone()),
            (json!("message_deleted"), message["id"].clone())
        );
    }

    // Bob's socket heard none of it: its first message is his own change.
    bob.message(&bobs, "bob's own", &[]).await;
    let first = next(&mut bobs_tab).await;
    assert_eq!(
        (first["type"].clone(), first["message"]["text"].clone()),
        (json!("message_created"), json!("bob's own"))
    );
    assert_eq!(first["eventId"], 1);

    // A deleted session says so, then closes.
    let (status, _) = alice.delete(&format!("/api/sessions/{session}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        next_of(&mut phone, "session_deleted").await["sessionId"],
        json!(session)
    );
    assert_eq!(closed(&mut phone).await.0, 1000);
    app.shutdown().await;
}

#[tokio::test]
async fn a_device_resumes_from_its_last_event_id() {
    let app = start().await;
    let alice = user(&app, "alice@example.com", None).await;
    let session = id(&alice.session(None).await);
    for text in ["one", "two", "three"] {
        alice.message(&session, text, &[]).await;
    }
    let mut back = device(&alice, &session, Some(1)).await;
    for (event_id, text) in [(2, "two"), (3, "three")] {
        let created = next(&mut back).await;
        assert_eq!(
            (
                created["eventId"].clone(),
                created["message"]["text"].clone()
            ),
            (json!(event_id), json!(text))
        );
    }
    alice.message(&session, "four", &[]).await;
    let created = next(&mut back).await;
    assert_eq!(
        (
            created["eventId"].clone(),
            created["message"]["text"].clone()
        ),
        (json!(4), json!("four"))
    );
    // Without an id, a device starts now.
    let mut fresh = device(&alice, &session, None).await;
    alice.message(&session, "five", &[]).await;
    assert_eq!(next(&mut fresh).await["eventId"], 5);
    assert_eq!(next(&mut back).await["eventId"], 5);
    app.shutdown().await;
}

#[tokio::test]
async fn a_change_on_one_process_reaches_a_socket_on_another() {
    let redis = std::env::var("EASEL_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty());
    let prefix = format!("easel-editor-{}:", ulid::Ulid::new());
    let with_bus = |c: &mut easel::config::Config| {
        cheap(c);
        if let Some(url) = &redis {
            c.redis.url = Some(easel::base::secret::Secret::new(url.clone()));
            c.redis.prefix = prefix.clone();
        }
    };
    let first = spawn_app_with(with_bus, Roles::ALL).await;
    let shared = first.dir.path().to_path_buf();
    let second = spawn_app_with(
        move |c| {
            with_bus(c);
            c.data_dir = shared;
        },
        Roles::ALL,
    )
    .await;
    let alice = user(&first, "alice@example.com", None).await;
    let session = id(&alice.session(None).await);
    let on_second = Client {
        app: &second,
        token: alice.token.clone(),
        host: None,
    };
    let mut ws = device(&on_second, &session, None).await;
    let started = std::time::Instant::now();
    alice.message(&session, "across processes", &[]).await;
    let created = next(&mut ws).await;
    assert_eq!(created["message"]["text"], "across processes");
    if redis.is_some() {
        // The bus, not the safety poll (1 s), carried it.
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "{:?}",
            started.elapsed()
        );
    }
    second.shutdown().await;
    first.shutdown().await;
}
