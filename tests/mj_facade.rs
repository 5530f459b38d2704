//! The `/mj` facade (Easel as a midjourney-proxy, `contract/midjourney-proxy.md` §1) over
//! real HTTP on the local renderer: every route under every prefix, the chain imagine → U2 →
//! zoom out → V1 → describe through buttons' customIds, the MODAL two-step flow, tenant
//! isolation, and bad input answered in the envelope (never a 500); and the notifyHook calls,
//! also of a job's progress when its worker is another process (on the fake midjourney-proxy).

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::{ChildGuard, TestApp};
use easel::base::operation::{Operation, Strength, UpscaleStyle};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = app
        .http
        .request(method, app.url(path))
        .header("mj-api-secret", key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    call(app, reqwest::Method::POST, path, &app.api_key, Some(body)).await
}

async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    call(app, reqwest::Method::GET, path, &app.api_key, None).await
}

/// A submit that must be accepted (code 1, or 22 behind other jobs): its task id.
async fn submitted(app: &TestApp, path: &str, body: Value) -> String {
    let (status, reply) = post(app, path, body).await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply["code"] == 1 || reply["code"] == 22, "{path}: {reply}");
    if reply["code"] == 22 {
        assert!(reply["properties"]["numberOfQueues"].as_u64() > Some(0));
    }
    reply["result"].as_str().expect("task id").to_owned()
}

/// Fetches the task until it has ended.
async fn ended(app: &TestApp, prefix: &str, id: &str) -> Value {
    let started = Instant::now();
    loop {
        let (status, task) = get(app, &format!("{prefix}/task/{id}/fetch")).await;
        assert_eq!(status, 200, "{task}");
        if task["status"] == "SUCCESS" || task["status"] == "FAILURE" {
            return task;
        }
        assert!(
            started.elapsed() < WAIT,
            "task {id} still {}",
            task["status"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn succeeded(app: &TestApp, path: &str, body: Value) -> Value {
    let prefix = &path[..path.find("/submit/").expect("a submit path")];
    let id = submitted(app, path, body).await;
    let task = ended(app, prefix, &id).await;
    assert_eq!(task["status"], "SUCCESS", "{path}: {task}");
    assert_eq!(task["progress"], "100%");
    task
}

fn button(task: &Value, label_or_emoji: &str) -> String {
    task["buttons"]
        .as_array()
        .expect("buttons")
        .iter()
        .find(|b| b["label"] == label_or_emoji || b["emoji"] == label_or_emoji)
        .unwrap_or_else(|| panic!("no button {label_or_emoji} in {task}"))["customId"]
        .as_str()
        .expect("customId")
        .to_owned()
}

fn data_url(bytes: &[u8]) -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

#[tokio::test]
async fn imagine_u2_zoom_v1_describe_chain_through_buttons() {
    let app = common::spawn_app().await;

    let grid = succeeded(
        &app,
        "/mj/submit/imagine",
        json!({"prompt": "a red fox", "state": "order-42", "botType": "MID_JOURNEY"}),
    )
    .await;
    let id = grid["id"].as_str().expect("id");
    assert!(
        id.len() == 16 && id.chars().all(|c| c.is_ascii_digit()),
        "{id}"
    );
    assert_eq!(
        (&grid["action"], &grid["state"], &grid["description"]),
        (
            &json!("IMAGINE"),
            &json!("order-42"),
            &json!("/imagine a red fox")
        )
    );
    assert!(grid["imageUrl"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(grid["failReason"].is_null());
    for time in ["submitTime", "startTime", "finishTime"] {
        assert!(
            grid[time].as_i64() > Some(1_600_000_000_000),
            "{time}: {grid}"
        );
    }
    let hash = grid["properties"]["messageHash"].as_str().expect("hash");
    let labels: Vec<&str> = grid["buttons"]
        .as_array()
        .expect("buttons")
        .iter()
        .map(|b| b["label"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(labels, ["U1", "U2", "U3", "U4", "", "V1", "V2", "V3", "V4"]);
    assert_eq!(button(&grid, "U2"), format!("MJ::JOB::upsample::2::{hash}"));
    assert_eq!(
        button(&grid, "🔄"),
        format!("MJ::JOB::reroll::0::{hash}::SOLO")
    );

    let u2 = succeeded(
        &app,
        "/mj/submit/action",
        json!({"taskId": id, "customId": button(&grid, "U2")}),
    )
    .await;
    assert_eq!(
        (&u2["action"], &u2["parentId"], &u2["description"]),
        (
            &json!("UPSCALE"),
            &json!(id),
            &json!(format!("/up {id} U2"))
        )
    );
    let zoom_id = button(&u2, "Zoom Out 2x");
    assert!(zoom_id.starts_with("MJ::Outpaint::50::1::"), "{zoom_id}");

    let zoomed = succeeded(
        &app,
        "/mj/submit/action",
        json!({"taskId": u2["id"], "customId": zoom_id}),
    )
    .await;
    assert_eq!(zoomed["action"], "ZOOM");
    assert_eq!(zoomed["buttons"].as_array().map(Vec::len), Some(9));

    // V1 on the zoom's grid through the Java edition's `change`.
    let v1 = succeeded(
        &app,
        "/mj/submit/change",
        json!({"taskId": zoomed["id"], "action": "VARIATION", "index": 1}),
    )
    .await;
    assert_eq!(v1["action"], "VARIATION");

    let image = app
        .http
        .get(v1["imageUrl"].as_str().expect("url"))
        .send()
        .await
        .expect("image")
        .bytes()
        .await
        .expect("bytes");
    let described = succeeded(
        &app,
        "/mj/submit/describe",
        json!({"base64": data_url(&image)}),
    )
    .await;
    assert_eq!(described["action"], "DESCRIBE");
    let text = described["prompt"].as_str().expect("prompt");
    assert!(!text.is_empty());
    assert_eq!(described["properties"]["finalPrompt"], text);
    assert!(described["buttons"].as_array().is_some_and(Vec::is_empty));

    // The whole chain is Easel jobs, each on its parent job's image.
    let expected = [
        (
            &u2,
            Operation::Upscale {
                style: UpscaleStyle::Subtle,
                factor: 2,
            },
            Some((&grid, 2)),
        ),
        (&zoomed, Operation::ZoomOut { percent: 200 }, Some((&u2, 1))),
        (
            &v1,
            Operation::Variation(Strength::Strong),
            Some((&zoomed, 1)),
        ),
        (&described, Operation::Describe, None),
    ];
    for (task, operation, parent) in expected {
        let job = job_of(&app, task).await;
        assert_eq!(job.params.operation, operation, "{task}");
        let parent = match parent {
            Some((p, index)) => Some((job_of(&app, p).await.id, index)),
            None => None,
        };
        assert_eq!(
            job.params.parent_job_id.zip(job.params.parent_index),
            parent,
            "{task}"
        );
    }
}

async fn job_of(app: &TestApp, task: &Value) -> easel::base::job::Job {
    let store = app.app.store.as_ref();
    let id = task["id"].as_str().expect("id");
    let task = store
        .mj_proxy_get(&app.tenant_id, id)
        .await
        .expect("get")
        .expect("task");
    let job_id = task.job_id.expect("job");
    store
        .job_get(&app.tenant_id, &job_id)
        .await
        .expect("job")
        .expect("job")
}

#[tokio::test]
async fn every_route_under_every_prefix_and_auth_header() {
    let app = common::spawn_app().await;
    for prefix in ["/mj", "/mj-fast/mj", "/mj-turbo", "/mj-relax/mj"] {
        let id = submitted(
            &app,
            &format!("{prefix}/submit/imagine"),
            json!({"prompt": "a boat"}),
        )
        .await;
        let task = ended(&app, prefix, &id).await;
        assert_eq!(task["status"], "SUCCESS");
        let mode = prefix
            .strip_prefix("/mj-")
            .map(|m| m.trim_end_matches("/mj").to_uppercase());
        assert_eq!(task["mode"], json!(mode), "{prefix}");
    }

    // Authorization raw or Bearer, or New API's `midjourney-proxy` with mj-api-secret.
    for (name, value) in [
        ("authorization", app.api_key.clone()),
        ("authorization", format!("Bearer {}", app.api_key)),
    ] {
        let response = app
            .http
            .get(app.url("/mj/task/list"))
            .header(name, value)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 200);
    }
    let relay = app
        .http
        .get(app.url("/mj/task/list"))
        .header("authorization", "midjourney-proxy")
        .header("mj-api-secret", &app.api_key)
        .send()
        .await
        .expect("send");
    assert_eq!(relay.status(), 200);

    let (_, listed) = get(&app, "/mj/task/list").await;
    let ids: Vec<String> = listed
        .as_array()
        .expect("list")
        .iter()
        .map(|t| t["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.len(), 4);
    let (_, some) = post(
        &app,
        "/mj/task/list-by-condition",
        json!({"ids": [ids[0], ids[2], "1234567890123456"]}),
    )
    .await;
    let got: Vec<&str> = some
        .as_array()
        .expect("list")
        .iter()
        .map(|t| t["id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(got, [ids[0].as_str(), ids[2].as_str()]);
    let (_, none) = post(&app, "/mj/task/list-by-condition", json!({})).await;
    assert_eq!(none, json!([]));
    let (status, queue) = get(&app, "/mj/task/queue").await;
    assert_eq!((status, queue), (200, json!([])));

    let (_, seed) = get(&app, &format!("/mj/task/{}/image-seed", ids[0])).await;
    assert_eq!(seed["code"], 1, "{seed}");
    assert!(seed["result"]
        .as_str()
        .is_some_and(|s| s.parse::<u64>().is_ok()));
    let (_, seeded) = post(
        &app,
        "/mj/submit/imagine",
        json!({"prompt": "a kite --seed 77"}),
    )
    .await;
    let seeded = seeded["result"].as_str().expect("id").to_owned();
    ended(&app, "/mj", &seeded).await;
    let (_, seed) = get(&app, &format!("/mj/task/{seeded}/image-seed")).await;
    assert_eq!(seed["result"], "77");

    // simple-change, the reroll button, blend.
    let u1 = succeeded(
        &app,
        "/mj/submit/simple-change",
        json!({"content": format!("{} U1", ids[0])}),
    )
    .await;
    assert_eq!(u1["action"], "UPSCALE");
    let (_, grid) = get(&app, &format!("/mj/task/{}/fetch", ids[0])).await;
    let reroll = succeeded(
        &app,
        "/mj/submit/action",
        json!({"taskId": ids[0], "customId": button(&grid, "🔄")}),
    )
    .await;
    assert_eq!(reroll["action"], "REROLL");
    let png = data_url(&common::images::png(48, 32));
    let blend = succeeded(
        &app,
        "/mj/submit/blend",
        json!({"base64Array": [png, png], "dimensions": "LANDSCAPE"}),
    )
    .await;
    assert_eq!(blend["action"], "BLEND");
    assert_eq!(blend["buttons"].as_array().map(Vec::len), Some(9));
}

#[tokio::test]
async fn modal_flows_wait_for_their_prompt_and_cancel() {
    let app = common::spawn_app().await;
    let grid = succeeded(
        &app,
        "/mj/submit/imagine",
        json!({"prompt": "a lighthouse"}),
    )
    .await;
    let single = succeeded(
        &app,
        "/mj/submit/action",
        json!({"taskId": grid["id"], "customId": button(&grid, "U3")}),
    )
    .await;

    // Custom Zoom: 21, a MODAL task, then the modal with the prompt.
    let (_, waiting) = post(
        &app,
        "/mj/submit/action",
        json!({"taskId": single["id"], "customId": button(&single, "Custom Zoom"), "state": "z"}),
    )
    .await;
    assert_eq!(waiting["code"], 21, "{waiting}");
    assert_eq!(waiting["description"], "Waiting for window confirm");
    assert_eq!(waiting["properties"]["remix"], true);
    assert_eq!(waiting["properties"]["finalPrompt"], "a lighthouse");
    let modal_id = waiting["result"].as_str().expect("id").to_owned();
    let (_, task) = get(&app, &format!("/mj/task/{modal_id}/fetch")).await;
    assert_eq!(
        (&task["status"], &task["progress"], &task["action"]),
        (&json!("MODAL"), &json!("0%"), &json!("ZOOM"))
    );
    let (_, bad) = post(
        &app,
        "/mj/submit/modal",
        json!({"taskId": modal_id, "prompt": "x --zoom 3"}),
    )
    .await;
    assert_eq!(bad["code"], 4, "{bad}");
    let (_, started) = post(
        &app,
        "/mj/submit/modal",
        json!({"taskId": modal_id, "prompt": "a lighthouse at dusk --zoom 1.5"}),
    )
    .await;
    assert!(started["code"] == 1 || started["code"] == 22, "{started}");
    assert_eq!(started["result"], json!(modal_id));
    let zoomed = ended(&app, "/mj", &modal_id).await;
    assert_eq!(zoomed["status"], "SUCCESS", "{zoomed}");
    assert_eq!(zoomed["prompt"], "a lighthouse at dusk");
    assert_eq!(zoomed["state"], "z");
    // A modal task runs once.
    let (_, again) = post(&app, "/mj/submit/modal", json!({"taskId": modal_id})).await;
    assert_eq!(again["code"], 4, "{again}");

    // Vary (Region) needs the mask.
    let (_, region) = post(
        &app,
        "/mj/submit/action",
        json!({"taskId": single["id"], "customId": button(&single, "Vary (Region)")}),
    )
    .await;
    assert_eq!(region["code"], 21, "{region}");
    let region_id = region["result"].as_str().expect("id").to_owned();
    let (_, no_mask) = post(&app, "/mj/submit/modal", json!({"taskId": region_id})).await;
    assert_eq!(no_mask["code"], 4, "{no_mask}");
    let mask = data_url(&common::images::png(32, 32));
    let (_, painted) = post(
        &app,
        "/mj/submit/modal",
        json!({"taskId": region_id, "prompt": "a boat", "maskBase64": mask}),
    )
    .await;
    assert!(painted["code"] == 1 || painted["code"] == 22, "{painted}");
    let painted = ended(&app, "/mj", &region_id).await;
    assert_eq!(painted["status"], "SUCCESS", "{painted}");
    assert_eq!(painted["action"], "INPAINT");

    // A remix asks for the prompt; canceled, it fails as canceled and cannot start.
    let (_, remix) = post(
        &app,
        "/mj/submit/action",
        json!({"taskId": grid["id"], "customId": button(&grid, "V2"), "enableRemix": true}),
    )
    .await;
    assert_eq!(remix["code"], 21, "{remix}");
    let remix_id = remix["result"].as_str().expect("id");
    let response = app
        .http
        .post(app.url(&format!("/mj/task/{remix_id}/cancel")))
        .header("mj-api-secret", &app.api_key)
        .send()
        .await
        .expect("cancel");
    assert_eq!(response.status(), 200);
    let (_, canceled) = get(&app, &format!("/mj/task/{remix_id}/fetch")).await;
    assert_eq!(
        (
            &canceled["status"],
            &canceled["progress"],
            &canceled["failReason"]
        ),
        (&json!("FAILURE"), &json!(""), &json!("取消任务"))
    );
    let (_, late) = post(&app, "/mj/submit/modal", json!({"taskId": remix_id})).await;
    assert_eq!(late["code"], 4, "{late}");
    let (_, ended_cancel) = post(
        &app,
        &format!("/mj/task/{}/cancel", grid["id"].as_str().expect("id")),
        json!({}),
    )
    .await;
    assert_eq!(ended_cancel["code"], 4, "{ended_cancel}");
}

#[tokio::test]
async fn bad_input_and_other_tenants_get_the_envelope() {
    let app = common::spawn_app_with(
        |c| c.midjourney.banned_words = vec!["forbidden".into()],
        easel::server::Roles::ALL,
    )
    .await;
    let grid = succeeded(&app, "/mj/submit/imagine", json!({"prompt": "a tree"})).await;
    let id = grid["id"].as_str().expect("id");
    let jobs_before = job_count(&app).await;

    let refusals = [
        ("/mj/submit/imagine", json!({}), 4),
        ("/mj/submit/imagine", json!({"prompt": "  "}), 4),
        (
            "/mj/submit/imagine",
            json!({"prompt": 5.5, "base64Array": "x"}),
            4,
        ),
        (
            "/mj/submit/imagine",
            json!({"prompt": "a", "base64Array": ["data:image/png;base64,!!"]}),
            4,
        ),
        (
            "/mj/submit/imagine",
            json!({"prompt": "a", "state": "s".repeat(300)}),
            4,
        ),
        (
            "/mj/submit/imagine",
            json!({"prompt": "a", "notifyHook": "http://127.0.0.1:9/hook"}),
            4,
        ),
        (
            "/mj/submit/imagine",
            json!({"prompt": "a Forbidden tree"}),
            24,
        ),
        ("/mj/submit/describe", json!({}), 4),
        ("/mj/submit/blend", json!({"base64Array": ["x"]}), 4),
        (
            "/mj/submit/blend",
            json!({"base64Array": [], "dimensions": "ROUND"}),
            4,
        ),
        ("/mj/submit/action", json!({"taskId": id}), 4),
        (
            "/mj/submit/action",
            json!({"taskId": id, "customId": "MJ::BOOKMARK::x"}),
            4,
        ),
        // A button the task does not have, or another task's hash.
        (
            "/mj/submit/action",
            json!({"taskId": id, "customId": "MJ::JOB::pan_left::1::x::SOLO"}),
            4,
        ),
        (
            "/mj/submit/action",
            json!({"taskId": id, "customId": "MJ::JOB::upsample::1::other"}),
            4,
        ),
        (
            "/mj/submit/change",
            json!({"taskId": id, "action": "UPSCALE", "index": 7}),
            4,
        ),
        (
            "/mj/submit/change",
            json!({"taskId": id, "action": "ZOOM", "index": 1}),
            4,
        ),
        (
            "/mj/submit/simple-change",
            json!({"content": "nonsense"}),
            4,
        ),
        ("/mj/submit/modal", json!({"taskId": id}), 4),
        ("/mj/task/list-by-condition", json!({"ids": "x"}), 4),
    ];
    for (path, body, code) in refusals {
        let (status, reply) = post(&app, path, body.clone()).await;
        assert_eq!(
            (status, &reply["code"]),
            (200, &json!(code)),
            "{path} {body}: {reply}"
        );
        assert!(
            reply["result"].is_null() && reply["description"].is_string(),
            "{reply}"
        );
    }
    let (_, banned) = post(
        &app,
        "/mj/submit/imagine",
        json!({"prompt": "a forbidden tree"}),
    )
    .await;
    assert_eq!(banned["properties"]["bannedWord"], "forbidden");
    // Not JSON at all.
    let response = app
        .http
        .post(app.url("/mj/submit/imagine"))
        .header("mj-api-secret", &app.api_key)
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.expect("json")["code"], 4);
    // Nothing refused made a job.
    assert_eq!(job_count(&app).await, jobs_before);

    // Unknown tasks: 404 with code 3.
    for (method, path) in [
        (
            reqwest::Method::GET,
            "/mj/task/1234567890123456/fetch".to_owned(),
        ),
        (
            reqwest::Method::GET,
            "/mj/task/1234567890123456/image-seed".to_owned(),
        ),
        (
            reqwest::Method::POST,
            "/mj/task/1234567890123456/cancel".to_owned(),
        ),
    ] {
        let (status, reply) = call(&app, method, &path, &app.api_key, None).await;
        assert_eq!((status, &reply["code"]), (404, &json!(3)), "{path}");
    }
    let (status, reply) = post(
        &app,
        "/mj/submit/action",
        json!({"taskId": "1234567890123456", "customId": button(&grid, "U1")}),
    )
    .await;
    assert_eq!((status, &reply["code"]), (404, &json!(3)));

    // Auth.
    let (status, _) = call(&app, reqwest::Method::GET, "/mj/task/list", "wrong", None).await;
    assert_eq!(status, 401);
    let bare = app
        .http
        .get(app.url("/mj/task/list"))
        .send()
        .await
        .expect("send");
    assert_eq!(bare.status(), 401);

    // Another tenant sees none of these tasks and cannot act on them.
    let (_, other_key) = app.new_tenant("other", 1000, 10).await;
    let path = format!("/mj/task/{id}/fetch");
    let (status, _) = call(&app, reqwest::Method::GET, &path, &other_key, None).await;
    assert_eq!(status, 404);
    let action = json!({"taskId": id, "customId": button(&grid, "U1")});
    let (status, reply) = call(
        &app,
        reqwest::Method::POST,
        "/mj/submit/action",
        &other_key,
        Some(action),
    )
    .await;
    assert_eq!((status, &reply["code"]), (404, &json!(3)));
    let (_, listed) = call(
        &app,
        reqwest::Method::GET,
        "/mj/task/list",
        &other_key,
        None,
    )
    .await;
    assert_eq!(listed, json!([]));
    let (_, by_ids) = call(
        &app,
        reqwest::Method::POST,
        "/mj/task/list-by-condition",
        &other_key,
        Some(json!({"ids": [id]})),
    )
    .await;
    assert_eq!(by_ids, json!([]));
}

#[tokio::test]
async fn a_full_queue_answers_23_and_makes_nothing() {
    let app =
        common::spawn_app_with(|c| c.midjourney.max_waiting = 0, easel::server::Roles::ALL).await;
    let (status, reply) = post(&app, "/mj/submit/imagine", json!({"prompt": "a cat"})).await;
    assert_eq!((status, &reply["code"]), (200, &json!(23)), "{reply}");
    assert_eq!(reply["description"], "队列已满，请稍后尝试");
    assert_eq!(job_count(&app).await, 0);
}

async fn job_count(app: &TestApp) -> usize {
    let jobs: Value = app.get("/v1/jobs").await.json().await.expect("json");
    jobs["items"].as_array().map_or(0, Vec::len)
}

// ---- notifyHook ----

/// One call a loopback receiver got: its headers and JSON body.
/// A notifyHook call: its headers, its body parsed, and its bytes as sent (what is signed).
type Call = (reqwest::header::HeaderMap, Value, axum::body::Bytes);

/// A receiver on 127.0.0.1:0 whose calls come out of the returned channel.
async fn receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<Call>) {
    use axum::http::HeaderMap;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Call>();
    let hook = move |headers: HeaderMap, body: axum::body::Bytes| {
        let tx = tx.clone();
        async move {
            let mut copied = reqwest::header::HeaderMap::new();
            for (name, value) in &headers {
                if let (Ok(n), Ok(v)) = (
                    reqwest::header::HeaderName::from_bytes(name.as_str().as_bytes()),
                    reqwest::header::HeaderValue::from_bytes(value.as_bytes()),
                ) {
                    copied.insert(n, v);
                }
            }
            let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let _ = tx.send((copied, parsed, body));
            "ok"
        }
    };
    let router = axum::Router::new().route("/hook", axum::routing::post(hook));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    (format!("http://{addr}/hook"), rx)
}

async fn hooked_app() -> (TestApp, String) {
    let app = common::spawn_app_with(
        |c| {
            c.webhooks.allow_networks = vec!["127.0.0.0/8".into()];
            c.webhooks.poll_ms = 20;
        },
        easel::server::Roles::ALL,
    )
    .await;
    let created: Value = app
        .http
        .put(app.url("/v1/webhook"))
        .bearer_auth(&app.api_key)
        .json(&json!({"url": null}))
        .send()
        .await
        .expect("webhook")
        .json()
        .await
        .expect("json");
    let secret = created["secret"].as_str().expect("secret").to_owned();
    (app, secret)
}

/// The calls for task `id` until one ends it (SUCCESS or FAILURE).
async fn calls_until_end(
    calls: &mut tokio::sync::mpsc::UnboundedReceiver<Call>,
    id: &str,
) -> Vec<Call> {
    let mut got = Vec::new();
    loop {
        let call = tokio::time::timeout(WAIT, calls.recv())
            .await
            .expect("a notifyHook call in time")
            .expect("receiver open");
        if call.1["id"] != id {
            continue;
        }
        let end = call.1["status"] == "SUCCESS" || call.1["status"] == "FAILURE";
        got.push(call);
        if end {
            return got;
        }
    }
}

fn order(task: &Value) -> u32 {
    let progress: u32 = task["progress"]
        .as_str()
        .and_then(|p| p.trim_end_matches('%').parse().ok())
        .unwrap_or(0);
    match task["status"].as_str().unwrap_or("") {
        "MODAL" => 50,
        "SUBMITTED" => 100,
        "IN_PROGRESS" => 300 + progress.min(99),
        _ => 400,
    }
}

#[tokio::test]
async fn notify_hook_posts_the_whole_task_signed_and_never_regressing() {
    let (app, secret) = hooked_app().await;
    let (hook, mut calls) = receiver().await;
    let id = submitted(
        &app,
        "/mj/submit/imagine",
        json!({"prompt": "a comet", "notifyHook": hook, "state": "s-1"}),
    )
    .await;
    let got = calls_until_end(&mut calls, &id).await;
    let statuses: Vec<&str> = got
        .iter()
        .map(|(_, t, _)| t["status"].as_str().unwrap_or(""))
        .collect();
    // SUBMITTED unless the job had started before the submit's call was rendered.
    assert!(
        matches!(statuses.first(), Some(&"SUBMITTED" | &"IN_PROGRESS")),
        "{statuses:?}"
    );
    assert_eq!(statuses.last(), Some(&"SUCCESS"), "{statuses:?}");
    for pair in got.windows(2) {
        assert!(order(&pair[0].1) < order(&pair[1].1), "{statuses:?}");
    }
    let (headers, last, sent) = got.last().expect("the end");
    // The whole task object, as fetch shows it.
    let (_, fetched) = get(&app, &format!("/mj/task/{id}/fetch")).await;
    for field in [
        "id",
        "action",
        "status",
        "progress",
        "state",
        "buttons",
        "properties",
    ] {
        assert_eq!(last[field], fetched[field], "{field}");
    }
    // Signed with the tenant's webhook secret (Standard Webhooks).
    let header = |name: &str| headers[name].to_str().expect("header").to_owned();
    let timestamp: i64 = header("webhook-timestamp").parse().expect("timestamp");
    let signed = easel::webhooks::signing::sign(
        &[easel::base::secret::Secret::new(secret)],
        &header("webhook-id"),
        timestamp,
        sent,
    )
    .expect("signature");
    assert_eq!(header("webhook-signature"), signed.webhook_signature);

    // The MODAL flow: MODAL, then its submit's states, then its end.
    let u1 = succeeded(
        &app,
        "/mj/submit/action",
        json!({"taskId": id, "customId": button(&fetched, "U1")}),
    )
    .await;
    let (_, waiting) = post(
        &app,
        "/mj/submit/action",
        json!({"taskId": u1["id"], "customId": button(&u1, "Custom Zoom"), "notifyHook": hook}),
    )
    .await;
    let modal_id = waiting["result"].as_str().expect("id").to_owned();
    let first = tokio::time::timeout(WAIT, calls.recv())
        .await
        .expect("a call")
        .expect("open");
    assert_eq!(
        (&first.1["id"], &first.1["status"]),
        (&json!(modal_id), &json!("MODAL"))
    );
    post(
        &app,
        "/mj/submit/modal",
        json!({"taskId": modal_id, "prompt": "wide --zoom 2"}),
    )
    .await;
    let rest = calls_until_end(&mut calls, &modal_id).await;
    assert_eq!(rest.last().map(|c| &c.1["status"]), Some(&json!("SUCCESS")));
    assert!(rest.iter().all(|c| order(&c.1) > 50));

    // The outbox logged every call.
    let deliveries: Value = app
        .get("/v1/webhooks/deliveries")
        .await
        .json()
        .await
        .expect("json");
    let states: Vec<&str> = deliveries["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| d["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(states.len(), got.len() + 1 + rest.len(), "{deliveries}");
    // Each was received; the newest may not have recorded its answer yet.
    assert!(
        states
            .iter()
            .all(|s| matches!(*s, "succeeded" | "delivering")),
        "{states:?}"
    );
}

/// `easel serve --role worker` on the data folder of `app` (its store, its master key), with
/// MJ jobs on the midjourney-proxy keys `app` registered.
fn worker_process(app: &TestApp) -> ChildGuard {
    let dir = app.dir.path();
    let config = "[worker]\npoll_ms = 20\n[providers]\ndefault = \"midjourney\"\n\
                  [providers.midjourney]\npoll_ms = 10\n\
                  [webhooks]\npoll_ms = 20\nallow_networks = [\"127.0.0.0/8\"]\n";
    std::fs::write(dir.join("easel.toml"), config).expect("easel.toml");
    common::spawn_worker_process(dir, "worker.log", &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_in_another_process_sends_the_progress_calls() {
    use easel::testing::fake_mj_proxy::{FakeMjProxy, MjFault};
    let fake = FakeMjProxy::start(&["mj-1"]).await;
    // Its tasks stay IN_PROGRESS at 45% until they are canceled.
    fake.set_fault("mj-1", MjFault::Stuck);
    let api = common::spawn_app_with(
        |c| {
            c.providers.default = Some("midjourney".into());
            c.webhooks.allow_networks = vec!["127.0.0.0/8".into()];
        },
        common::API_ONLY,
    )
    .await;
    api.add_key("midjourney", "mj-1", Some(&fake.base_url), 60_000, 4)
        .await;
    let webhook = api
        .http
        .put(api.url("/v1/webhook"))
        .bearer_auth(&api.api_key)
        .json(&json!({"url": null}))
        .send()
        .await
        .expect("webhook");
    assert!(webhook.status().is_success(), "{}", webhook.status());
    let _worker = worker_process(&api);
    let (hook, mut calls) = receiver().await;
    let id = submitted(
        &api,
        "/mj/submit/imagine",
        json!({"prompt": "a lighthouse", "notifyHook": hook}),
    )
    .await;

    // The worker's own calls: the start, then the proxy's 45%.
    let mut got = Vec::new();
    while !got.iter().any(|t: &Value| t["progress"] == "45%") {
        let (_, task, _) = tokio::time::timeout(WAIT, calls.recv())
            .await
            .expect("the progress call in time (see worker.log in the data folder)")
            .expect("receiver open");
        if task["id"] == id {
            got.push(task);
        }
    }
    let progress = got.last().expect("a call");
    assert_eq!(progress["status"], "IN_PROGRESS", "{progress}");
    let (status, _) = post(&api, &format!("/mj/task/{id}/cancel"), json!({})).await;
    assert_eq!(status, 200);
    got.extend(
        calls_until_end(&mut calls, &id)
            .await
            .into_iter()
            .map(|c| c.1),
    );
    let statuses: Vec<(&str, &str)> = got
        .iter()
        .map(|t| {
            let text = |f: &str| t[f].as_str().unwrap_or("");
            (text("status"), text("progress"))
        })
        .collect();
    assert_eq!(statuses.last(), Some(&("FAILURE", "")), "{statuses:?}");
    // Each state was called once. (Calls queued a moment apart, as the API's SUBMITTED and
    // the worker's start, may arrive in either order: the dispatcher sends several at once.)
    let mut orders: Vec<u32> = got.iter().map(order).collect();
    orders.sort_unstable();
    orders.dedup();
    assert_eq!(orders.len(), got.len(), "{statuses:?}");
}
