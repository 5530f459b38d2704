//! The editor's session routes over real HTTP (`editor-api.md` §2.2): `/api/sessions*`,
//! `/api/messages*` and `/api/images/*`, every route's success and errors, the fixed origin
//! bugs, search and automatic titles, image references, and isolation: another user's or
//! another tenant's session, message or image is a 404 on every route.

mod common;

use common::{images, spawn_app_with, TestApp};
use easel::config::Config;
use easel::server::Roles;
use reqwest::header::HOST;
use reqwest::multipart::{Form, Part};
use reqwest::Method;
use serde_json::{json, Value};

const PASSWORD: &str = "Pa55word-Zq7";

fn cheap(config: &mut Config) {
    config.users.argon2_memory_kib = 64;
    config.users.argon2_iterations = 1;
}

async fn start() -> TestApp {
    spawn_app_with(cheap, Roles::ALL).await
}

struct Client<'a> {
    app: &'a TestApp,
    token: Option<String>,
    host: Option<&'static str>,
}

impl Client<'_> {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.app.http.request(method, self.app.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(host) = self.host {
            request = request.header(HOST, host);
        }
        let response = request.send().await.expect("send");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::PUT, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(Method::DELETE, path, None).await
    }

    async fn session(&self, title: Option<&str>) -> Value {
        let body = title.map_or(json!({}), |t| json!({"title": t}));
        let (status, body) = self.post("/api/sessions", body).await;
        assert_eq!(status, 201, "{body}");
        body["session"].clone()
    }

    async fn message(&self, session: &str, text: &str, image_ids: &[&str]) -> Value {
        let (status, body) = self
            .post(
                &format!("/api/sessions/{session}/messages"),
                json!({"role": "user", "text": text, "imageIds": image_ids}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["message"], "Message created successfully");
        body["messageData"].clone()
    }

    async fn upload(&self, session: &str) -> Value {
        let form = Form::new()
            .text("sessionId", session.to_owned())
            .text("type", "uploaded")
            .part("image", Part::bytes(images::png(16, 16)).file_name("a.png"));
        let mut request = self
            .app
            .http
            .post(self.app.url("/api/images/upload"))
            .multipart(form);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(host) = self.host {
            request = request.header(HOST, host);
        }
        let response = request.send().await.expect("upload");
        assert_eq!(response.status(), 201);
        response.json::<Value>().await.expect("json")["image"].clone()
    }
}

async fn user<'a>(app: &'a TestApp, email: &str, host: Option<&'static str>) -> Client<'a> {
    let anonymous = Client {
        app,
        token: None,
        host,
    };
    let (status, body) = anonymous
        .post(
            "/api/auth/register",
            json!({"email": email, "username": "someone", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    Client {
        app,
        token: Some(body["token"].as_str().expect("token").to_owned()),
        host,
    }
}

/// A user of a second tenant (reached through its claimed host name).
async fn other_tenant_user(app: &TestApp) -> Client<'_> {
    let (other, _) = app.new_tenant("b", 60, 5).await;
    app.app
        .store
        .tenant_hosts_set(&other, vec!["b.example".into()])
        .await
        .unwrap();
    user(app, "eve@example.com", Some("b.example")).await
}

fn id(value: &Value) -> String {
    value["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn sessions_follow_the_contract() {
    let app = start().await;
    let alice = user(&app, "alice@example.com", None).await;
    let (status, body) = alice.post("/api/sessions", json!({})).await;
    assert_eq!(status, 201);
    assert_eq!(body["message"], "Session created successfully");
    let session = &body["session"];
    assert_eq!(session["title"], "New Chat");
    assert_eq!(session["messageCount"], 0);
    assert_eq!(session["deletedAt"], Value::Null);
    for field in ["id", "userId", "createdAt", "updatedAt"] {
        assert!(session[field].is_string(), "{field}: {session}");
    }
    let sid = id(session);
    let named = alice.session(Some("Cats")).await;

    let (status, body) = alice.get(&format!("/api/sessions/{sid}")).await;
    assert_eq!((status, body["session"]["id"].clone()), (200, json!(sid)));

    let (status, body) = alice
        .put(&format!("/api/sessions/{sid}"), json!({"title": "Dogs"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["message"], "Session updated successfully");
    assert_eq!(body["session"]["title"], "Dogs");

    let (status, body) = alice.get(&format!("/api/sessions/{sid}/stats")).await;
    assert_eq!(status, 200);
    assert_eq!(body["stats"]["messageCount"], 0);
    assert!(body["stats"]["createdAt"].is_string());

    // Most recently touched first; `total` is what was returned (as the origin).
    let (status, body) = alice.get("/api/sessions").await;
    assert_eq!(status, 200);
    let ids: Vec<_> = body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(id)
        .collect();
    assert_eq!(ids, vec![sid.clone(), id(&named)]);
    assert_eq!(
        body["pagination"],
        json!({"limit": 20, "offset": 0, "total": 2, "totalAll": 2})
    );
    let (_, body) = alice.get("/api/sessions?limit=1&offset=1").await;
    assert_eq!(body["sessions"][0]["id"], json!(id(&named)));
    assert_eq!(body["pagination"]["total"], 1);
    let (_, body) = alice.get("/api/sessions?limit=abc").await;
    assert_eq!(body["pagination"]["limit"], 20);

    // Deleted sessions are gone from the list and every route (the origin listed them).
    let (status, body) = alice.delete(&format!("/api/sessions/{sid}")).await;
    assert_eq!(
        (status, body),
        (200, json!({"message": "Session deleted successfully"}))
    );
    let (_, body) = alice.get("/api/sessions").await;
    assert_eq!(body["sessions"].as_array().unwrap().len(), 1);
    for (status, body) in [
        alice.get(&format!("/api/sessions/{sid}")).await,
        alice.delete(&format!("/api/sessions/{sid}")).await,
        alice.get(&format!("/api/sessions/{sid}/messages")).await,
    ] {
        assert_eq!((status, body), (404, json!({"error": "Session not found"})));
    }
    app.shutdown().await;
}

#[tokio::test]
async fn bodies_are_checked_as_joi_did() {
    let app = start().await;
    let alice = user(&app, "alice@example.com", None).await;
    let sid = id(&alice.session(None).await);
    let msgs = format!("/api/sessions/{sid}/messages");
    let long = "x".repeat(101);
    let cases = [
        (
            "/api/sessions",
            json!({"title": ""}),
            "\"title\" is not allowed to be empty",
        ),
        (
            "/api/sessions",
            json!({"title": long}),
            "\"title\" length must be less than or equal to 100 characters long",
        ),
        (
            "/api/sessions",
            json!({"title": 5}),
            "\"title\" must be a string",
        ),
        ("/api/sessions", json!({"foo": 1}), "\"foo\" is not allowed"),
        (&msgs, json!({"text": "hi"}), "\"role\" is required"),
        (
            &msgs,
            json!({"role": "bot", "text": "hi"}),
            "\"role\" must be one of [user, assistant]",
        ),
        (&msgs, json!({"role": "user"}), "\"text\" is required"),
        (
            &msgs,
            json!({"role": "user", "text": ""}),
            "\"text\" is not allowed to be empty",
        ),
        (
            &msgs,
            json!({"role": "user", "text": "a", "params": []}),
            "\"params\" must be of type object",
        ),
        (
            &msgs,
            json!({"role": "user", "text": "a", "imageIds": "x"}),
            "\"imageIds\" must be an array",
        ),
        (
            &msgs,
            json!({"role": "user", "text": "a", "imageIds": [1]}),
            "\"imageIds[0]\" must be a string",
        ),
        (
            &msgs,
            json!({"role": "user", "text": "a", "generate": "yes"}),
            "\"generate\" must be a boolean",
        ),
        (
            &msgs,
            json!({"role": "user", "text": "a", "x": 1}),
            "\"x\" is not allowed",
        ),
    ];
    for (path, body, details) in cases {
        let (status, answer) = alice.post(path, body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(
            answer,
            json!({"error": "Validation failed", "details": details}),
            "{body}"
        );
    }
    let (status, answer) = alice.put(&format!("/api/sessions/{sid}"), json!({})).await;
    assert_eq!(
        (status, answer["details"].clone()),
        (400, json!("\"title\" is required"))
    );
    // Malformed JSON is a 400 (the origin's was a 500).
    let response = app
        .http
        .post(app.url("/api/sessions"))
        .bearer_auth(alice.token.as_deref().unwrap())
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // No token: 401 on every route.
    let anonymous = Client {
        app: &app,
        token: None,
        host: None,
    };
    for path in [
        "/api/sessions",
        &format!("/api/sessions/{sid}"),
        "/api/messages/x",
        "/api/images/x",
    ] {
        let (status, body) = anonymous.get(path).await;
        assert_eq!(status, 401, "{path}");
        assert_eq!(body["error"], "Access token required");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn messages_work_in_order_with_images_and_titles() {
    let app = start().await;
    let alice = user(&app, "alice@example.com", None).await;
    let sid = id(&alice.session(None).await);
    let image = alice.upload(&sid).await;
    let image_id = id(&image);
    let first = alice
        .message(
            &sid,
            "A red fox in snow\nsecond line",
            &[&image_id, "unknown"],
        )
        .await;
    assert_eq!(first["role"], "user");
    assert_eq!(first["params"], json!({}));
    assert_eq!(first["imageIds"], json!([image_id, "unknown"]));
    assert_eq!(first["editedOf"], Value::Null);
    assert_eq!(first["images"].as_array().unwrap().len(), 1);
    let (_, body) = alice.get(&format!("/api/images/{image_id}")).await;
    assert_eq!(body["image"]["refCount"], 1);
    // The first message named the session.
    let (_, body) = alice.get(&format!("/api/sessions/{sid}")).await;
    assert_eq!(body["session"]["title"], "A red fox in snow");
    assert_eq!(body["session"]["messageCount"], 1);
    alice.message(&sid, "two", &[]).await;
    alice.message(&sid, "three", &[]).await;

    // Oldest first; a first page of `limit` holds `limit` messages (the origin's held one less).
    let (status, body) = alice
        .get(&format!("/api/sessions/{sid}/messages?limit=2"))
        .await;
    assert_eq!(status, 200);
    let texts: Vec<_> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].clone())
        .collect();
    assert_eq!(
        texts,
        [json!("A red fox in snow\nsecond line"), json!("two")]
    );
    assert_eq!(
        body["pagination"],
        json!({"limit": 2, "offset": 0, "total": 2, "totalAll": 3})
    );
    assert_eq!(body["messages"][0]["images"][0]["id"], json!(image_id));
    assert_eq!(body["messages"][0]["editedOf"], Value::Null);

    // The message routes work (the origin's always failed), with JSON values after an update.
    let mid = id(&first);
    let (status, body) = alice.get(&format!("/api/messages/{mid}")).await;
    assert_eq!((status, body["message"]["id"].clone()), (200, json!(mid)));
    let (status, body) = alice
        .put(
            &format!("/api/messages/{mid}"),
            json!({"text": "A blue fox", "params": {"k": 1}, "imageIds": []}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "Message updated successfully");
    assert_eq!(body["messageData"]["params"], json!({"k": 1}));
    assert_eq!(body["messageData"]["imageIds"], json!([]));
    let (_, body) = alice.get(&format!("/api/images/{image_id}")).await;
    assert_eq!(body["image"]["refCount"], 0);
    let (status, body) = alice
        .put(&format!("/api/messages/{mid}"), json!({"text": ""}))
        .await;
    assert_eq!(
        (status, body["details"].clone()),
        (400, json!("\"text\" is not allowed to be empty"))
    );

    // Image sub-routes.
    let (status, body) = alice
        .post(
            &format!("/api/messages/{mid}/images"),
            json!({"imageId": image_id}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["messageData"]["imageIds"], json!([image_id]));
    let (_, body) = alice.get(&format!("/api/messages/{mid}/images")).await;
    assert_eq!(body["images"][0]["id"], json!(image_id));
    assert_eq!(body["images"][0]["refCount"], 1);
    let (status, body) = alice
        .post(
            &format!("/api/messages/{mid}/images"),
            json!({"imageId": "nope"}),
        )
        .await;
    assert_eq!((status, body), (404, json!({"error": "Image not found"})));
    let (status, body) = alice
        .post(&format!("/api/messages/{mid}/images"), json!({}))
        .await;
    assert_eq!(
        (status, body["details"].clone()),
        (400, json!("\"imageId\" is required"))
    );
    let (status, _) = alice
        .delete(&format!("/api/messages/{mid}/images/{image_id}"))
        .await;
    assert_eq!(status, 200);
    let (status, body) = alice
        .delete(&format!("/api/messages/{mid}/images/{image_id}"))
        .await;
    assert_eq!((status, body), (404, json!({"error": "Image not found"})));
    let (_, body) = alice.get(&format!("/api/images/{image_id}")).await;
    assert_eq!(body["image"]["refCount"], 0);

    // Delete.
    let (status, body) = alice.delete(&format!("/api/messages/{mid}")).await;
    assert_eq!(
        (status, body),
        (200, json!({"message": "Message deleted successfully"}))
    );
    let (status, body) = alice.get(&format!("/api/messages/{mid}")).await;
    assert_eq!((status, body), (404, json!({"error": "Message not found"})));
    let (_, body) = alice.get(&format!("/api/sessions/{sid}/stats")).await;
    assert_eq!(body["stats"]["messageCount"], 2);

    // Search over titles and message texts.
    let other = id(&alice.session(Some("Portraits")).await);
    for (q, want) in [
        ("fox", vec![sid.clone()]),
        ("THREE", vec![sid.clone()]),
        ("portr", vec![other.clone()]),
        ("zebra", vec![]),
    ] {
        let (_, body) = alice.get(&format!("/api/sessions?q={q}")).await;
        let ids: Vec<_> = body["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(id)
            .collect();
        assert_eq!(ids, want, "q={q}");
    }
    // The image routes are mounted.
    let (status, body) = alice.get(&format!("/api/images/session/{sid}")).await;
    assert_eq!(status, 200);
    assert_eq!(body["images"][0]["id"], json!(image_id));
    let (status, body) = alice.get("/api/images/user/all").await;
    assert_eq!((status, body["images"].as_array().unwrap().len()), (200, 1));
    let (status, _) = alice.delete(&format!("/api/images/{image_id}")).await;
    assert_eq!(status, 200);
    app.shutdown().await;
}

#[tokio::test]
async fn another_user_or_tenant_gets_404_everywhere() {
    let app = start().await;
    let alice = user(&app, "alice@example.com", None).await;
    let sid = id(&alice.session(None).await);
    let image_id = id(&alice.upload(&sid).await);
    let mid = id(&alice.message(&sid, "mine", &[&image_id]).await);
    let bob = user(&app, "bob@example.com", None).await;
    let eve = other_tenant_user(&app).await;
    for stranger in [&bob, &eve] {
        let s = format!("/api/sessions/{sid}");
        let m = format!("/api/messages/{mid}");
        let session_404 = json!({"error": "Session not found"});
        let message_404 = json!({"error": "Message not found"});
        let image_404 = json!({"error": "Image not found"});
        let answers = [
            (stranger.get(&s).await, &session_404),
            (stranger.put(&s, json!({"title": "x"})).await, &session_404),
            (stranger.get(&format!("{s}/stats")).await, &session_404),
            (stranger.get(&format!("{s}/messages")).await, &session_404),
            (
                stranger
                    .post(
                        &format!("{s}/messages"),
                        json!({"role": "user", "text": "x"}),
                    )
                    .await,
                &session_404,
            ),
            (stranger.get(&m).await, &message_404),
            (stranger.put(&m, json!({"text": "x"})).await, &message_404),
            (stranger.get(&format!("{m}/images")).await, &message_404),
            (
                stranger.delete(&format!("{m}/images/{image_id}")).await,
                &message_404,
            ),
            (
                stranger.get(&format!("/api/images/{image_id}")).await,
                &image_404,
            ),
            (stranger.delete(&m).await, &message_404),
            (stranger.delete(&s).await, &session_404),
        ];
        for (i, ((status, body), want)) in answers.into_iter().enumerate() {
            assert_eq!((status, &body), (404, want), "case {i}");
        }
        let (_, body) = stranger.get("/api/sessions").await;
        assert_eq!(body["sessions"], json!([]));
        let (_, body) = stranger.get("/api/sessions?q=mine").await;
        assert_eq!(body["sessions"], json!([]));
        let (_, body) = stranger.get(&format!("/api/images/session/{sid}")).await;
        assert_eq!(body["images"], json!([]));
    }
    // Nothing changed for Alice.
    let (status, body) = alice.get(&format!("/api/messages/{mid}")).await;
    assert_eq!(
        (status, body["message"]["text"].clone()),
        (200, json!("mine"))
    );
    app.shutdown().await;
}
