//! The Midjourney API seed (`contract/midjourney-api.md`) over real HTTP on the local
//! renderer: every trigger route, the task reads, upload/message, the bot's callback and
//! queue release, the origin's error bodies, and token counts exact after each call (a
//! refused, failed or banned call costs nothing).

mod common;

use std::time::{Duration, Instant};

use common::TestApp;
use easel::ledger::mj;
use serde_json::{json, Value};

const BASE: &str = "/v1/api/trigger";
const WAIT: Duration = Duration::from_secs(20);

async fn app_key(app: &TestApp, name: &str, tokens: i64) -> String {
    mj::create(app.app.store.as_ref(), &app.tenant_id, name, tokens)
        .await
        .expect("app key")
        .0
}

async fn tokens(app: &TestApp, name: &str) -> (i64, i64) {
    let store = app.app.store.as_ref();
    let key = mj::by_name(store, name).await.expect("key");
    let info = mj::info(store, &key).await.expect("info");
    (info.token_total, info.token_use)
}

async fn post(app: &TestApp, key: &str, route: &str, body: Value) -> (u16, Value) {
    let response = app
        .http
        .post(app.url(&format!("{BASE}/{route}")))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("send");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

async fn task(app: &TestApp, key: &str, task_id: &str) -> Value {
    app.http
        .get(app.url(&format!("{BASE}/task/{task_id}")))
        .bearer_auth(key)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json")
}

/// Polls `GET /task/{id}` until it is no longer SUBMITTED.
async fn settled(app: &TestApp, key: &str, task_id: &str) -> Value {
    let started = Instant::now();
    loop {
        let t = task(app, key, task_id).await;
        if t["status"] != "SUBMITTED" {
            return t;
        }
        assert!(started.elapsed() < WAIT, "task {task_id} still SUBMITTED");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A trigger call that must be accepted; its answer, after its task succeeded.
async fn done(app: &TestApp, key: &str, route: &str, body: Value) -> (Value, Value) {
    let (status, answer) = post(app, key, route, body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["message"], "success", "{answer}");
    let t = settled(app, key, answer["result"].as_str().expect("task id")).await;
    assert_eq!(t["status"], "SUCCESS", "{route}: {t}");
    (answer, t)
}

#[tokio::test]
async fn every_trigger_route_chains_and_costs_one_token_each() {
    let app = common::spawn_app().await;
    let key = app_key(&app, "alice", 100).await;

    let (imagine, grid) = done(
        &app,
        &key,
        "imagine",
        json!({"prompt": "a cute cat", "picurl": null}),
    )
    .await;
    assert_eq!(
        (&imagine["code"], &imagine["trigger_type"]),
        (&json!(0), &json!("generate"))
    );
    let task_id = imagine["result"].as_str().expect("id");
    assert!(
        task_id.len() == 13 && task_id.chars().all(|c| c.is_ascii_digit()),
        "{task_id}"
    );
    let trigger_id = imagine["trigger_id"].as_str().expect("trigger").to_owned();
    assert!(trigger_id.parse::<u64>().is_ok_and(|t| t < 10_000_000_000));
    assert_eq!(
        grid["imageUrl"].as_str().expect("urls").split("||").count(),
        4
    );
    assert!(grid["buttons"]["msg_id"].is_i64() && grid["buttons"]["msg_hash"].is_string());
    assert_eq!(tokens(&app, "alice").await, (100, 1));

    // U2: the fork names the parent by its task id and answers its trigger id.
    let (upscale, single) = done(
        &app,
        &key,
        "upscale",
        json!({"index": 2, "msg_id": "1", "msg_hash": grid["buttons"]["msg_hash"], "trigger_id": task_id}),
    )
    .await;
    assert_eq!(
        (
            &upscale["code"],
            &upscale["trigger_type"],
            &upscale["trigger_id"]
        ),
        (&json!(0), &json!("upscale"), &json!(trigger_id))
    );
    assert_eq!(upscale["result"].as_str().expect("uuid").len(), 36);
    assert_eq!(
        single["imageUrl"]
            .as_str()
            .expect("url")
            .split("||")
            .count(),
        1
    );

    let on = |t: &Value| json!({"msg_id": t["buttons"]["msg_id"], "msg_hash": t["buttons"]["msg_hash"], "trigger_id": trigger_id});
    let mut zoom_body = on(&single);
    zoom_body["zoomout"] = json!(75);
    let (zoom, zoomed) = done(&app, &key, "zoomout", zoom_body).await;
    assert_eq!(
        (&zoom["code"], &zoom["trigger_type"]),
        (&json!(1), &json!("zoomout"))
    );
    let (_, varied) = done(&app, &key, "solo_high_variation", on(&zoomed)).await;
    assert_eq!(
        varied["imageUrl"]
            .as_str()
            .expect("urls")
            .split("||")
            .count(),
        4
    );
    let mut expand_body = on(&single);
    expand_body["direction"] = json!("up");
    done(&app, &key, "expand", expand_body).await;
    done(&app, &key, "reset", on(&grid)).await;
    done(&app, &key, "solo_low_variation", on(&single)).await;
    let mut v1 = on(&grid);
    v1["index"] = json!(1);
    v1["trigger_id"] = json!(task_id);
    let (variation, _) = done(&app, &key, "variation", v1).await;
    assert_eq!(variation["code"], 0);

    // describe an upload, and /message gives its link.
    let png = common::images::png(40, 30);
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(png)
            .file_name("a.png")
            .mime_str("image/png")
            .expect("mime"),
    );
    let uploaded: Value = app
        .http
        .post(app.url(&format!("{BASE}/upload")))
        .bearer_auth(&key)
        .multipart(form)
        .send()
        .await
        .expect("upload")
        .json()
        .await
        .expect("json");
    assert_eq!(uploaded["message"], "success", "{uploaded}");
    let filename = uploaded["upload_filename"].clone();
    let (describe, described) = done(
        &app,
        &key,
        "describe",
        json!({"upload_filename": filename, "trigger_id": uploaded["trigger_id"]}),
    )
    .await;
    assert_eq!(
        (&describe["code"], &describe["trigger_type"]),
        (&json!(1), &json!("describe"))
    );
    assert!(described["description"]
        .as_str()
        .expect("text")
        .contains("1️⃣"));
    let (status, message) = post(&app, &key, "message", json!({"upload_filename": filename})).await;
    assert_eq!((status, &message["message"]), (200, &json!("success")));
    assert!(message["picurl"]
        .as_str()
        .expect("picurl")
        .starts_with("http"));

    // Nine consuming calls, each settled; upload and message cost nothing.
    assert_eq!(tokens(&app, "alice").await, (100, 9));
    let store = app.app.store.as_ref();
    let account = mj::by_name(store, "alice").await.expect("key").account_id;
    let totals = store.ledger_totals(&account).await.expect("totals");
    assert_eq!((totals.balance, totals.held), (91, 0));

    // The caller's own tasks, newest first; another key sees none of them.
    let list = |k: String, q: &'static str| {
        let app = &app;
        async move {
            app.http
                .get(app.url(&format!("{BASE}/tasks{q}")))
                .bearer_auth(k)
                .send()
                .await
                .expect("send")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    let mine = list(key.clone(), "?status=SUCCESS&limit=100").await;
    assert_eq!(
        (&mine["success"], &mine["total"]),
        (&json!(true), &json!(9))
    );
    assert_eq!(mine["data"][8]["task_name"], "imagine");
    assert_eq!(mine["data"][8]["task_type"], "generate");
    assert_eq!(mine["data"][8]["prompts"], "a cute cat");
    assert_eq!(mine["data"][0]["task_name"], "describe");
    let paged = list(key.clone(), "?limit=3&offset=7").await;
    assert_eq!(paged["total"], 2);
    let other = app_key(&app, "bob", 5).await;
    assert_eq!(list(other.clone(), "").await["total"], 0);
    // Nor can it read them one by one.
    assert_eq!(task(&app, &other, task_id).await["message"], "任务不存在");
    app.shutdown().await;
}

#[tokio::test]
async fn refusals_are_the_origins_and_cost_nothing() {
    let app = common::spawn_app_with(
        |c| {
            c.midjourney.banned_words = vec!["gore".into()];
            c.midjourney.max_waiting = 2;
        },
        common::API_ONLY,
    )
    .await;
    let key = app_key(&app, "carol", 5).await;
    let raw = |auth: Option<&'static str>, body: &'static str| {
        let app = &app;
        async move {
            let mut request = app
                .http
                .post(app.url(&format!("{BASE}/imagine")))
                .header("content-type", "application/json")
                .body(body);
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            let response = request.send().await.expect("send");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("json"))
        }
    };
    let detail = |d: &str| json!({ "detail": d });
    assert_eq!(raw(None, "{}").await, (403, detail("Not authenticated")));
    assert_eq!(
        raw(Some("Basic abc"), "{}").await,
        (403, detail("Invalid authentication credentials"))
    );
    assert_eq!(
        raw(Some("bearer abc"), "{}").await,
        (403, detail("Invalid authentication scheme."))
    );
    assert_eq!(
        raw(Some("Bearer nope"), "").await,
        (403, detail("Invalid token or expired token."))
    );
    let bearer: &'static str = Box::leak(format!("Bearer {key}").into_boxed_str());
    assert_eq!(
        raw(Some(bearer), "").await,
        (
            400,
            json!({"code": 13, "message": "request params error: None"})
        )
    );
    let (status, banned) = post(&app, &key, "imagine", json!({"prompt": "a GORE scene"})).await;
    assert_eq!(
        (status, banned),
        (
            200,
            json!({"code": 14, "message": "banned prompt: {'gore'}"})
        )
    );
    assert_eq!(tokens(&app, "carol").await, (5, 0));

    // Unknown parents: 404 code 10 (the origin answered 500).
    let (status, body) = post(
        &app,
        &key,
        "upscale",
        json!({"index": 1, "msg_id": 1, "msg_hash": "x", "trigger_id": "123"}),
    )
    .await;
    assert_eq!((status, body["code"].clone()), (404, json!(10)));

    // Two tasks wait (no worker runs here): the queue bound answers code 15, for free.
    for _ in 0..2 {
        let (status, body) = post(&app, &key, "imagine", json!({"prompt": "a cat"})).await;
        assert_eq!((status, &body["code"]), (200, &json!(0)), "{body}");
    }
    let (_, full) = post(&app, &key, "imagine", json!({"prompt": "a cat"})).await;
    assert_eq!(
        full,
        json!({"code": 15, "message": "Task queue is full: 2"})
    );
    assert_eq!(tokens(&app, "carol").await, (5, 2));
    // A key with no token left is over the limit before its body is read.
    let poor = app_key(&app, "dave", 0).await;
    let (status, body) = post(&app, &poor, "imagine", json!({"prompt": "a cat"})).await;
    assert_eq!(
        (status, body),
        (
            429,
            detail("Token limit exceeded. Please contact administrator.")
        )
    );
    app.shutdown().await;
}

#[tokio::test]
async fn the_bot_callback_needs_its_secret_and_a_ban_releases_the_token() {
    let app = common::spawn_app_with(
        |c| c.midjourney.callback_secret = Some(easel::base::secret::Secret::new("s3cret")),
        common::API_ONLY,
    )
    .await;
    let key = app_key(&app, "erin", 10).await;
    let (_, imagine) = post(&app, &key, "imagine", json!({"prompt": "a cat"})).await;
    let trigger_id = imagine["trigger_id"].as_str().expect("trigger").to_owned();
    assert_eq!(tokens(&app, "erin").await, (10, 1));
    let callback = |query: &'static str, body: Value| {
        let app = &app;
        async move {
            let response = app
                .http
                .post(app.url(&format!("{BASE}/midjourney/result{query}")))
                .json(&body)
                .send()
                .await
                .expect("send");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("json"))
        }
    };
    let payload = |kind: &str, trigger: &str| {
        json!({"type": kind, "id": 1384952701758083308u64, "content": "**<#1#>a cat**",
               "attachments": [], "embeds": [], "trigger_id": trigger})
    };
    assert_eq!(callback("", payload("banned", &trigger_id)).await.0, 403);
    assert_eq!(
        callback("?secret=wrong", payload("banned", &trigger_id))
            .await
            .0,
        403
    );
    let (status, body) = callback("?secret=s3cret", json!({"type": "end"})).await;
    assert_eq!((status, &body["code"]), (400, &json!(13)));
    assert_eq!(
        callback("?secret=s3cret", payload("end", "999")).await,
        (200, json!({"message": "任务不存在"}))
    );
    assert_eq!(
        callback("?secret=s3cret", payload("banned", &trigger_id)).await,
        (200, json!({"message": "success"}))
    );
    let t = task(&app, &key, imagine["result"].as_str().expect("id")).await;
    assert_eq!(t, json!({"status": "FAILURE", "message": "任务被封禁"}));
    assert_eq!(
        tokens(&app, "erin").await,
        (10, 0),
        "a banned call costs nothing"
    );

    let release = app
        .http
        .post(app.url(&format!("{BASE}/queue/release?secret=s3cret")))
        .json(&json!({"trigger_id": trigger_id}))
        .send()
        .await
        .expect("send");
    let body: Value = release.json().await.expect("json");
    assert_eq!(
        body,
        json!({"code": 1, "message": "success", "trigger_id": trigger_id,
               "trigger_type": "queue_release", "result": "success"})
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_failed_job_gives_its_token_back() {
    let app =
        common::spawn_app_with(|c| c.worker.max_attempts = 1, easel::server::Roles::ALL).await;
    let key = app_key(&app, "frank", 3).await;
    let (status, answer) = post(
        &app,
        &key,
        "imagine",
        json!({"prompt": "a cat", "picurl": "http://nothing.invalid/a.png"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let t = settled(&app, &key, answer["result"].as_str().expect("id")).await;
    assert_eq!(t["status"], "FAILURE", "{t}");
    assert_eq!(tokens(&app, "frank").await, (3, 0));
    app.shutdown().await;
}
