//! The origin's HTTP contract (`seed-api.md`), checked over real HTTP against a real server:
//! status codes, error bodies, field names and formats, pagination, cancel, deadlines and
//! idempotency. Each test starts its own server.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{expect_error, keys, spawn_app, spawn_app_with, timestamp_millis, TestApp, API_ONLY};
use easel::base::clock::now_millis;
use easel::base::job::Finish;
use easel::store::StoreError;
use reqwest::Method;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);
const TERMINAL: &[&str] = &["SUCCEEDED", "FAILED", "CANCELED"];
const GENERATE: &str = "/v1/images/generate";
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Submits `body` as this app's tenant and returns the new job's id, asserting a 202.
async fn submitted(app: &TestApp, body: Value) -> String {
    submitted_as(app, &app.api_key, body).await
}

async fn submitted_as(app: &TestApp, key: &str, body: Value) -> String {
    let response = app.submit_as(key, body, None).await;
    let status = response.status();
    let body: Value = response.json().await.expect("json");
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "QUEUED", "{body}");
    body["jobId"].as_str().expect("jobId").to_owned()
}

/// POST /v1/images/generate with this app's key and extra headers.
async fn submit_with(app: &TestApp, body: Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = app
        .http
        .post(app.url(GENERATE))
        .bearer_auth(&app.api_key)
        .json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("send")
}

/// GET /v1/jobs/{id} as this app's tenant, asserting a 200.
async fn job(app: &TestApp, job_id: &str) -> Value {
    let response = app.get_job(&app.api_key, job_id).await;
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

async fn list_raw(app: &TestApp, key: &str, query: &str) -> reqwest::Response {
    app.http
        .get(app.url(&format!("/v1/jobs{query}")))
        .bearer_auth(key)
        .send()
        .await
        .expect("send")
}

/// GET /v1/jobs with `query` (`""` or `"?limit=5"`) as this app's tenant, asserting a 200.
async fn list(app: &TestApp, query: &str) -> Value {
    list_as(app, &app.api_key, query).await
}

async fn list_as(app: &TestApp, key: &str, query: &str) -> Value {
    let response = list_raw(app, key, query).await;
    let status = response.status();
    let body: Value = response.json().await.expect("json");
    assert_eq!(status, 200, "{body}");
    assert_eq!(keys(&body), ["hasMore", "items", "nextCursor"], "{body}");
    body
}

fn item_ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["id"].as_str().expect("id").to_owned())
        .collect()
}

async fn cancel(app: &TestApp, key: &str, job_id: &str) -> reqwest::Response {
    app.http
        .delete(app.url(&format!("/v1/jobs/{job_id}")))
        .bearer_auth(key)
        .send()
        .await
        .expect("send")
}

/// The statuses of a job's audit trail, in order.
async fn event_statuses(app: &TestApp, job_id: &str) -> Vec<String> {
    app.event_statuses(job_id).await
}

/// Walks `GET /v1/jobs?limit=N` through `nextCursor` until `hasMore` is false; calls
/// `between` after each page. Returns the ids in order and the page sizes.
async fn walk(
    app: &TestApp,
    limit: u32,
    mut between: impl AsyncFnMut(),
) -> (Vec<String>, Vec<usize>) {
    let mut ids = Vec::new();
    let mut sizes = Vec::new();
    let mut query = format!("?limit={limit}");
    loop {
        let page = list(app, &query).await;
        let page_ids = item_ids(&page);
        sizes.push(page_ids.len());
        ids.extend(page_ids);
        assert!(sizes.len() < 100, "pagination does not end");
        if page["hasMore"] == json!(false) {
            assert_eq!(page["nextCursor"], Value::Null, "last page has a cursor");
            return (ids, sizes);
        }
        assert_eq!(page["hasMore"], json!(true));
        let cursor = page["nextCursor"]
            .as_str()
            .expect("nextCursor while hasMore");
        query = format!("?limit={limit}&cursor={cursor}");
        between().await;
    }
}

/// Width of a PNG from its IHDR chunk.
fn png_width(bytes: &[u8]) -> u32 {
    assert!(bytes.starts_with(PNG_SIGNATURE), "not a PNG");
    assert_eq!(&bytes[12..16], b"IHDR");
    u32::from_be_bytes(bytes[16..20].try_into().expect("4 bytes"))
}

// ---------------------------------------------------------------------------------------
// GET /health

#[tokio::test]
async fn health_needs_no_key_and_stamps_utc_milliseconds() {
    let app = spawn_app_with(|_| {}, API_ONLY).await;
    let before = now_millis();
    let response = app.http.get(app.url("/health")).send().await.expect("send");
    let after = now_millis();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(keys(&body), ["status", "timestamp"]);
    assert_eq!(body["status"], "ok");
    let at = timestamp_millis(&body["timestamp"]);
    assert!(
        (before..=after).contains(&at),
        "{at} not in {before}..={after}"
    );
}

// ---------------------------------------------------------------------------------------
// POST /v1/images/generate

#[tokio::test]
async fn submit_answers_202_queued_and_mode_defaults_to_final() {
    let app = spawn_app_with(|_| {}, API_ONLY).await;
    let response = app.submit(json!({"prompt": "a lighthouse"})).await;
    assert_eq!(response.status(), 202);
    assert!(response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("application/json"));
    assert!(response.headers().get("idempotent-replayed").is_none());
    let body: Value = response.json().await.expect("json");
    assert_eq!(keys(&body), ["jobId", "status"]);
    assert_eq!(body["status"], "QUEUED");
    let default = body["jobId"].as_str().expect("jobId").to_owned();
    assert!(!default.is_empty());

    let view = job(&app, &default).await;
    assert_eq!(view["prompt"], "a lighthouse");
    assert_eq!(view["mode"], "final");
    assert!(view.get("inputImageUrl").is_none(), "{view}");

    let draft = submitted(&app, json!({"prompt": "a lighthouse", "mode": "draft"})).await;
    assert_eq!(job(&app, &draft).await["mode"], "draft");
    let null_mode = submitted(&app, json!({"prompt": "a lighthouse", "mode": null})).await;
    assert_eq!(job(&app, &null_mode).await["mode"], "final");
    let final_mode = submitted(&app, json!({"prompt": "a lighthouse", "mode": "final"})).await;
    assert_eq!(job(&app, &final_mode).await["mode"], "final");

    let with_image = submitted(
        &app,
        json!({"prompt": "the same, at night", "inputImageUrl": "https://example.com/ref.png"}),
    )
    .await;
    assert_eq!(
        job(&app, &with_image).await["inputImageUrl"],
        "https://example.com/ref.png"
    );
    let plain_http = submitted(
        &app,
        json!({"prompt": "x", "inputImageUrl": "http://example.com:8080/a/b.jpg?x=1"}),
    )
    .await;
    assert_eq!(
        job(&app, &plain_http).await["inputImageUrl"],
        "http://example.com:8080/a/b.jpg?x=1"
    );

    let ids: HashSet<_> = [
        &default,
        &draft,
        &null_mode,
        &final_mode,
        &with_image,
        &plain_http,
    ]
    .into_iter()
    .collect();
    assert_eq!(ids.len(), 6, "every submit is a new job");
}

#[tokio::test]
async fn every_job_route_requires_a_known_bearer_key() {
    let app = spawn_app_with(|_| {}, API_ONLY).await;
    let job_id = submitted(&app, json!({"prompt": "a cat"})).await;
    let authorizations = [
        None,
        Some(format!("Basic {}", app.api_key)),
        Some(app.api_key.clone()),
        Some("Bearer".to_owned()),
        Some("Bearer ".to_owned()),
        Some("Bearer img_00000000000000000000000000000000".to_owned()),
        Some(format!("Bearer {}x", app.api_key)),
        Some(format!("Token {}", app.api_key)),
    ];
    let routes = [
        (Method::POST, GENERATE.to_owned()),
        (Method::GET, format!("/v1/jobs/{job_id}")),
        (Method::GET, "/v1/jobs".to_owned()),
        (Method::DELETE, format!("/v1/jobs/{job_id}")),
    ];
    for authorization in &authorizations {
        for (method, path) in &routes {
            let mut request = app
                .http
                .request(method.clone(), app.url(path))
                .json(&json!({"prompt": "a dog"}));
            if let Some(value) = authorization {
                request = request.header("Authorization", value);
            }
            let response = request.send().await.expect("send");
            expect_error(response, 401, "INVALID_API_KEY").await;
        }
    }
    // The key is checked before the body: a bad body without a key is still a 401.
    let response = app
        .http
        .post(app.url(GENERATE))
        .header("Content-Type", "text/plain")
        .body("{")
        .send()
        .await
        .expect("send");
    expect_error(response, 401, "INVALID_API_KEY").await;
    // The scheme is case-insensitive.
    let response = app
        .http
        .get(app.url(&format!("/v1/jobs/{job_id}")))
        .header("Authorization", format!("bearer {}", app.api_key))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    // Nothing the refused requests asked for happened.
    let page = list(&app, "").await;
    assert_eq!(item_ids(&page), [job_id.as_str()]);
    assert_eq!(job(&app, &job_id).await["status"], "QUEUED");
}

#[tokio::test]
async fn submit_refuses_bad_fields_with_400_naming_the_field() {
    let app = spawn_app_with(|_| {}, API_ONLY).await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({}), "prompt"),
        (json!({"mode": "draft"}), "prompt"),
        (json!({"prompt": null}), "prompt"),
        (json!({"prompt": ""}), "prompt"),
        (json!({"prompt": "   \n\t  "}), "prompt"),
        (json!({"prompt": 42}), "prompt"),
        (json!({"prompt": true}), "prompt"),
        (json!({"prompt": ["a cat"]}), "prompt"),
        (json!({"prompt": {"text": "a cat"}}), "prompt"),
        (json!({"prompt": "x".repeat(4001)}), "prompt"),
        (json!({"prompt": "a cat", "mode": "best"}), "mode"),
        (json!({"prompt": "a cat", "mode": ""}), "mode"),
        (json!({"prompt": "a cat", "mode": 1}), "mode"),
        (json!({"prompt": "a cat", "mode": ["draft"]}), "mode"),
        (
            json!({"prompt": "a cat", "inputImageUrl": "ftp://example.com/a.png"}),
            "inputImageUrl",
        ),
        (
            json!({"prompt": "a cat", "inputImageUrl": "file:///etc/passwd"}),
            "inputImageUrl",
        ),
        (
            json!({"prompt": "a cat", "inputImageUrl": "not a url"}),
            "inputImageUrl",
        ),
        (
            json!({"prompt": "a cat", "inputImageUrl": "http://"}),
            "inputImageUrl",
        ),
        (
            json!({"prompt": "a cat", "inputImageUrl": "//example.com/a.png"}),
            "inputImageUrl",
        ),
        (
            json!({"prompt": "a cat", "inputImageUrl": "javascript:alert(1)"}),
            "inputImageUrl",
        ),
        (
            json!({"prompt": "a cat", "inputImageUrl": "data:image/png;base64,AAAA"}),
            "inputImageUrl",
        ),
        (
            json!({"prompt": "a cat", "inputImageUrl": ""}),
            "inputImageUrl",
        ),
        (
            json!({"prompt": "a cat", "inputImageUrl": 42}),
            "inputImageUrl",
        ),
        (
            json!({"prompt": "a cat", "inputImageUrl": format!("https://example.com/{}", "a".repeat(2100))}),
            "inputImageUrl",
        ),
        (json!({"prompt": "a cat", "n": 0}), "n must"),
        (json!({"prompt": "a cat", "n": 5}), "n must"),
        (json!({"prompt": "a cat", "n": -1}), "n must"),
        (json!({"prompt": "a cat", "n": 1.5}), "n must"),
        (json!({"prompt": "a cat", "n": "2"}), "n must"),
        (
            json!({"prompt": "a cat", "aspectRatio": "7:5"}),
            "aspectRatio",
        ),
        (json!({"prompt": "a cat", "aspectRatio": ""}), "aspectRatio"),
        (json!({"prompt": "a cat", "aspectRatio": 16}), "aspectRatio"),
        (json!({"prompt": "a cat", "imageSize": "8K"}), "imageSize"),
        (json!({"prompt": "a cat", "seed": -1}), "seed"),
        (json!({"prompt": "a cat", "seed": "x"}), "seed"),
    ];
    for (body, field) in cases {
        let response = app.submit(body.clone()).await;
        let message = expect_error(response, 400, "INVALID_REQUEST").await;
        assert!(
            message.contains(field),
            "{body}: {message:?} should name {field}"
        );
    }
    // Valid values of the same fields pass.
    for body in [
        json!({"prompt": "a cat", "n": 1}),
        json!({"prompt": "a cat", "n": 4}),
        json!({"prompt": "a cat", "aspectRatio": "16:9", "imageSize": "2K", "seed": 7}),
    ] {
        submitted(&app, body).await;
    }
    assert_eq!(
        item_ids(&list(&app, "").await).len(),
        3,
        "a refused submit made a job"
    );
}

#[tokio::test]
async fn submit_refuses_bad_framing_with_400() {
    let app = spawn_app_with(|_| {}, API_ONLY).await;
    let valid = br#"{"prompt":"a cat"}"#.to_vec();
    let json_type = Some("application/json");
    let cases: Vec<(Option<&str>, Vec<u8>, &str)> = vec![
        (json_type, br#"{"prompt": "a cat""#.to_vec(), "JSON"),
        (json_type, b"".to_vec(), "JSON"),
        (json_type, b"not json".to_vec(), "JSON"),
        (
            json_type,
            br#"{"prompt": "a cat"} trailing"#.to_vec(),
            "JSON",
        ),
        (json_type, b"{\"prompt\": \"\xff\xfe\"}".to_vec(), "JSON"),
        (json_type, br#"[{"prompt": "a cat"}]"#.to_vec(), "object"),
        (json_type, br#""a cat""#.to_vec(), "object"),
        (json_type, b"null".to_vec(), "object"),
        (json_type, b"42".to_vec(), "object"),
        (None, valid.clone(), "Content-Type"),
        (Some("text/plain"), valid.clone(), "Content-Type"),
        (Some("application/jsonx"), valid.clone(), "Content-Type"),
        (
            Some("application/x-www-form-urlencoded"),
            b"prompt=a+cat".to_vec(),
            "Content-Type",
        ),
        (
            Some("multipart/form-data; boundary=x"),
            valid.clone(),
            "Content-Type",
        ),
    ];
    for (content_type, body, expected) in cases {
        let mut request = app
            .http
            .post(app.url(GENERATE))
            .bearer_auth(&app.api_key)
            .body(body.clone());
        if let Some(content_type) = content_type {
            request = request.header("Content-Type", content_type);
        }
        let response = request.send().await.expect("send");
        let message = expect_error(response, 400, "INVALID_REQUEST").await;
        assert!(
            message.contains(expected),
            "{content_type:?} {:?}: {message:?} should mention {expected}",
            String::from_utf8_lossy(&body)
        );
    }
    for content_type in ["application/json; charset=utf-8", "Application/JSON"] {
        let response = app
            .http
            .post(app.url(GENERATE))
            .bearer_auth(&app.api_key)
            .header("Content-Type", content_type)
            .body(valid.clone())
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 202, "{content_type}");
    }
    assert_eq!(item_ids(&list(&app, "").await).len(), 2);
}

/// A JSON object body of exactly `len` bytes: a valid submit padded with an extra field.
fn padded_body(len: usize) -> Vec<u8> {
    let head = br#"{"prompt":"a cat","pad":""#;
    let tail = br#""}"#;
    let mut body = head.to_vec();
    body.resize(len - tail.len(), b'a');
    body.extend_from_slice(tail);
    assert_eq!(body.len(), len);
    body
}

#[tokio::test]
async fn submit_body_limit_is_256_kib() {
    let app = spawn_app_with(|_| {}, API_ONLY).await;
    let send = |body: Vec<u8>| {
        app.http
            .post(app.url(GENERATE))
            .bearer_auth(&app.api_key)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    let at_limit = send(padded_body(256 * 1024)).await.expect("send");
    assert_eq!(at_limit.status(), 202);
    for len in [256 * 1024 + 1, 1024 * 1024] {
        let response = send(padded_body(len)).await.expect("send");
        let message = expect_error(response, 413, "PAYLOAD_TOO_LARGE").await;
        assert!(message.contains("body"), "{len}: {message}");
    }
    assert_eq!(item_ids(&list(&app, "").await).len(), 1);
}

#[tokio::test]
async fn prompt_limit_is_4000_characters_after_trimming() {
    let app = spawn_app_with(|_| {}, API_ONLY).await;
    // Characters, not bytes: 4000 three-byte characters fit.
    let wide = "猫".repeat(4000);
    let id = submitted(&app, json!({ "prompt": wide })).await;
    assert_eq!(job(&app, &id).await["prompt"], json!(wide));
    let padded = format!("  {}  \n", "x".repeat(4000));
    let id = submitted(&app, json!({ "prompt": padded })).await;
    assert_eq!(job(&app, &id).await["prompt"], json!("x".repeat(4000)));
    let response = app.submit(json!({"prompt": "猫".repeat(4001)})).await;
    let message = expect_error(response, 400, "INVALID_REQUEST").await;
    assert!(message.contains("prompt"), "{message}");
}

#[tokio::test]
async fn submit_refuses_bad_idempotency_key_and_cancel_after_headers() {
    let app = spawn_app_with(|_| {}, API_ONLY).await;
    let body = json!({"prompt": "a cat"});
    let too_long = "k".repeat(256);
    for key in ["", too_long.as_str(), "has space", "tab\tkey"] {
        let response = submit_with(&app, body.clone(), &[("Idempotency-Key", key)]).await;
        let message = expect_error(response, 400, "INVALID_REQUEST").await;
        assert!(message.contains("Idempotency-Key"), "{key:?}: {message}");
    }
    for value in [
        "",
        "0",
        "0s",
        "soon",
        "-1",
        "1.5",
        "8d",
        "30d",
        "99999999999999999999",
    ] {
        let response = submit_with(&app, body.clone(), &[("Cancel-After", value)]).await;
        let message = expect_error(response, 400, "INVALID_REQUEST").await;
        assert!(message.contains("Cancel-After"), "{value:?}: {message}");
    }
    assert!(
        item_ids(&list(&app, "").await).is_empty(),
        "a refused submit made a job"
    );

    let longest = "k".repeat(255);
    let response = submit_with(&app, body.clone(), &[("Idempotency-Key", &longest)]).await;
    assert_eq!(response.status(), 202);
    let now = now_millis();
    for (value, millis) in [
        ("90", 90_000),
        ("5m", 300_000),
        ("1h 30m", 5_400_000),
        ("7d", 604_800_000),
    ] {
        let response = submit_with(&app, body.clone(), &[("Cancel-After", value)]).await;
        assert_eq!(response.status(), 202, "{value}");
        let id = response.json::<Value>().await.expect("json")["jobId"]
            .as_str()
            .expect("jobId")
            .to_owned();
        let view = job(&app, &id).await;
        let cancel_at = timestamp_millis(&view["cancelAt"]);
        let created = timestamp_millis(&view["createdAt"]);
        assert_eq!(cancel_at - created, millis, "{value}");
        assert!(created >= now);
    }
}

// ---------------------------------------------------------------------------------------
// GET /v1/jobs/{jobId}

#[tokio::test]
async fn queued_job_has_every_field_with_its_format() {
    let app = spawn_app_with(|_| {}, API_ONLY).await;
    let before = now_millis();
    let first = submitted(&app, json!({"prompt": "first", "mode": "draft"})).await;
    let second = submitted(
        &app,
        json!({"prompt": "second", "inputImageUrl": "https://example.com/ref.png"}),
    )
    .await;
    let after = now_millis();

    let response = app.get_job(&app.api_key, &first).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("application/json"));
    let view: Value = response.json().await.expect("json");
    assert_eq!(
        keys(&view),
        [
            "attempts",
            "createdAt",
            "error",
            "errorCode",
            "errorMessage",
            "finishedAt",
            "jobId",
            "maxAttempts",
            "mode",
            "operation",
            "prompt",
            "queuePosition",
            "resultUrls",
            "startedAt",
            "status",
            "updatedAt",
        ],
        "{view}"
    );
    assert_eq!(view["jobId"], json!(first));
    assert_eq!(view["status"], "QUEUED");
    assert_eq!(view["prompt"], "first");
    assert_eq!(view["mode"], "draft");
    assert_eq!(
        view["operation"], "generate",
        "an added field, generate by default"
    );
    assert_eq!(view["resultUrls"], json!([]));
    assert_eq!(view["error"], Value::Null);
    assert_eq!(view["errorCode"], Value::Null);
    assert_eq!(view["errorMessage"], Value::Null);
    assert_eq!(view["attempts"], 0);
    assert_eq!(view["maxAttempts"], 3);
    assert_eq!(view["startedAt"], Value::Null);
    assert_eq!(view["finishedAt"], Value::Null);
    assert_eq!(view["queuePosition"], 0);
    let created = timestamp_millis(&view["createdAt"]);
    assert!((before..=after).contains(&created), "{view}");
    assert_eq!(timestamp_millis(&view["updatedAt"]), created);

    let view = job(&app, &second).await;
    assert_eq!(view["queuePosition"], 1, "{view}");
    assert_eq!(view["inputImageUrl"], "https://example.com/ref.png");
    assert!(timestamp_millis(&view["createdAt"]) >= created);
}

#[tokio::test]
async fn succeeded_job_links_to_pngs_served_by_easel() {
    let app = spawn_app().await;
    let final_id = submitted(&app, json!({"prompt": "a red fox", "n": 2})).await;
    let draft_id = submitted(&app, json!({"prompt": "a red fox", "mode": "draft"})).await;
    let view = app.wait_for(&final_id, TERMINAL, WAIT).await;
    assert_eq!(view["status"], "SUCCEEDED", "{view}");
    assert_eq!(
        keys(&view),
        [
            "attempts",
            "createdAt",
            "error",
            "errorCode",
            "errorMessage",
            "finishedAt",
            "jobId",
            "maxAttempts",
            "mode",
            "operation",
            "prompt",
            "resultUrls",
            "startedAt",
            "status",
            "updatedAt",
        ],
        "{view}"
    );
    assert_eq!(view["error"], Value::Null);
    assert_eq!(view["errorCode"], Value::Null);
    assert_eq!(view["errorMessage"], Value::Null);
    assert_eq!(view["attempts"], 1);
    let created = timestamp_millis(&view["createdAt"]);
    let started = timestamp_millis(&view["startedAt"]);
    let finished = timestamp_millis(&view["finishedAt"]);
    let updated = timestamp_millis(&view["updatedAt"]);
    assert!(
        created <= started && started <= finished && finished <= updated,
        "{view}"
    );

    let urls: Vec<&str> = view["resultUrls"]
        .as_array()
        .expect("resultUrls")
        .iter()
        .map(|u| u.as_str().expect("url string"))
        .collect();
    assert_eq!(urls.len(), 2, "{view}");
    for url in &urls {
        assert!(!url.starts_with("data:"), "a data: URL: {url:.40}");
        assert!(url.starts_with(&format!("{}/v1/files/", app.base)), "{url}");
        let image = app.http.get(*url).send().await.expect("get");
        assert_eq!(image.status(), 200, "{url}");
        assert_eq!(image.headers()["content-type"], "image/png");
        let bytes = image.bytes().await.expect("bytes");
        assert_eq!(png_width(&bytes), 32, "final mode renders the final size");
    }
    assert_ne!(urls[0], urls[1]);

    let draft = app.wait_for(&draft_id, TERMINAL, WAIT).await;
    assert_eq!(draft["status"], "SUCCEEDED", "{draft}");
    let url = draft["resultUrls"][0].as_str().expect("url");
    let bytes = app
        .http
        .get(url)
        .send()
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(png_width(&bytes), 16, "draft mode renders the draft size");

    // The list shows the same links (the signature may differ across a minute boundary).
    let page = list(&app, "").await;
    let item = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|item| item["id"] == json!(final_id))
        .expect("listed")
        .clone();
    assert_eq!(item["status"], "SUCCEEDED");
    let paths = |v: &Value| -> Vec<String> {
        v.as_array()
            .expect("urls")
            .iter()
            .map(|u| {
                u.as_str()
                    .expect("url")
                    .split('?')
                    .next()
                    .expect("path")
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(paths(&item["resultUrls"]), paths(&view["resultUrls"]));

    // Every status change left an event, in order.
    assert_eq!(
        event_statuses(&app, &final_id).await,
        ["QUEUED", "RUNNING", "SUCCEEDED"]
    );
    let events = app.app.store.job_events(&final_id).await.expect("events");
    assert_eq!(
        events.iter().map(|e| e.attempt).collect::<Vec<_>>(),
        [0, 1, 1]
    );
    assert!(events.windows(2).all(|w| w[0].at <= w[1].at));

    // A finished job cannot be canceled.
    let response = cancel(&app, &app.api_key, &final_id).await;
    let message = expect_error(response, 400, "INVALID_STATE").await;
    assert!(message.contains("SUCCEEDED"), "{message}");
    assert_eq!(job(&app, &final_id).await["status"], "SUCCEEDED");
    app.shutdown().await;
}

/// Splits a signed link into (key, expires, sig).
fn signed_parts(url: &str) -> (String, String, String) {
    let (path, query) = url.split_once('?').expect("query");
    let key = path
        .split_once("/v1/files/")
        .expect("files path")
        .1
        .to_owned();
    let mut expires = String::new();
    let mut sig = String::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("expires", v)) => expires = v.to_owned(),
            Some(("sig", v)) => sig = v.to_owned(),
            _ => {}
        }
    }
    (key, expires, sig)
}

#[tokio::test]
async fn result_links_refuse_tampering_and_expiry_with_403() {
    let app = spawn_app().await;
    let id = submitted(&app, json!({"prompt": "a blue whale", "mode": "draft"})).await;
    let view = app.wait_for(&id, TERMINAL, WAIT).await;
    assert_eq!(view["status"], "SUCCEEDED", "{view}");
    let url = view["resultUrls"][0].as_str().expect("url").to_owned();
    let (key, expires, sig) = signed_parts(&url);
    let get = |path: String| app.http.get(app.url(&path)).send();

    let ok = get(format!("/v1/files/{key}?expires={expires}&sig={sig}"))
        .await
        .expect("send");
    assert_eq!(ok.status(), 200);

    let last = sig.chars().last().expect("sig");
    let flipped = format!(
        "{}{}",
        &sig[..sig.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    let later: i64 = expires.parse::<i64>().expect("expires") + 60;
    let other_key = key.replace("-0.png", "-1.png");
    assert_ne!(other_key, key);
    let tampered = [
        format!("/v1/files/{key}?expires={expires}&sig={flipped}"),
        format!(
            "/v1/files/{key}?expires={expires}&sig={}",
            &sig[..sig.len() - 2]
        ),
        format!("/v1/files/{key}?expires={expires}&sig=zz"),
        format!("/v1/files/{key}?expires={expires}&sig="),
        format!("/v1/files/{key}?expires={expires}"),
        format!("/v1/files/{key}?sig={sig}"),
        format!("/v1/files/{key}?expires=abc&sig={sig}"),
        format!("/v1/files/{key}?expires={later}&sig={sig}"),
        format!("/v1/files/{other_key}?expires={expires}&sig={sig}"),
        format!("/v1/files/{key}"),
        format!("/v1/files/%FF?expires={expires}&sig={sig}"),
    ];
    for path in tampered {
        let response = get(path.clone()).await.expect("send");
        expect_error(response, 403, "INVALID_SIGNATURE").await;
    }

    // A link this server signed, but whose time is up.
    let now_secs = now_millis() / 1000;
    let expired = app.app.urls.url(&key, now_secs - 2 * 3600).await;
    let (_, expired_at, _) = signed_parts(&expired);
    assert!(expired_at.parse::<i64>().expect("expires") < now_secs);
    let response = app.http.get(&expired).send().await.expect("send");
    expect_error(response, 403, "INVALID_SIGNATURE").await;
    // The same signer, now, makes a link that works: the refusal above was the expiry.
    let fresh = app.app.urls.url(&key, now_secs).await;
    assert_eq!(
        app.http.get(&fresh).send().await.expect("send").status(),
        200
    );
    app.shutdown().await;
}

#[tokio::test]
async fn job_etag_answers_304_until_the_job_changes() {
    let app = spawn_app_with(|_| {}, API_ONLY).await;
    let id = submitted(&app, json!({"prompt": "a cat"})).await;
    let path = app.url(&format!("/v1/jobs/{id}"));
    let first = app.get_job(&app.api_key, &id).await;
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].to_str().expect("ascii").to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
        "{etag}"
    );

    let conditional = |value: String| {
        app.http
            .get(&path)
            .bearer_auth(&app.api_key)
            .header("If-None-Match", value)
            .send()
    };
    let response = conditional(etag.clone()).await.expect("send");
    assert_eq!(response.status(), 304);
    assert_eq!(response.headers()["etag"], etag.as_str());
    assert!(response.bytes().await.expect("bytes").is_empty());
    let response = conditional(format!("\"nope\", {etag}"))
        .await
        .expect("send");
    assert_eq!(response.status(), 304);
    let response = conditional("\"nope\"".to_owned()).await.expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], etag.as_str());
    // Another tenant gets no 304 (nor anything else) by guessing the ETag.
    let (_, other_key) = app.new_tenant("other", 10_000, 50).await;
    let response = app
        .http
        .get(&path)
        .bearer_auth(&other_key)
        .header("If-None-Match", etag.clone())
        .send()
        .await
        .expect("send");
    expect_error(response, 404, "JOB_NOT_FOUND").await;

    assert_eq!(cancel(&app, &app.api_key, &id).await.status(), 200);
    let response = conditional(etag.clone()).await.expect("send");
    assert_eq!(
        response.status(),
        200,
        "the job changed; the old ETag must not match"
    );
    let new_etag = response.headers()["etag"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_ne!(new_etag, etag);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], "CANCELED");
}

#[tokio::test]
async fn unknown_jobs_are_404_job_not_found() {
    let app = spawn_app_with(|_| {}, API_ONLY).await;
    let long = "a".repeat(5000);
    for id in [
        "01jzzzzzzzzzzzzzzzzzzzzzzz",
        "nope",
        "%20",
        long.as_str(),
        "%FF",
        "%00",
    ] {
        let response = app.get_job(&app.api_key, id).await;
        expect_error(response, 404, "JOB_NOT_FOUND").await;
        let response = cancel(&app, &app.api_key, id).await;
        expect_error(response, 404, "JOB_NOT_FOUND").await;
    }
}

#[tokio::test]
async fn tenants_cannot_see_list_or_cancel_each_others_jobs() {
    let app = spawn_app_with(|_| {}, API_ONLY).await;
    let (_, other_key) = app.new_tenant("other", 10_000, 50).await;
    let mine = submitted(&app, json!({"prompt": "mine"})).await;
    let theirs = submitted_as(&app, &other_key, json!({"prompt": "theirs"})).await;

    let unknown = expect_error(
        app.get_job(&other_key, "01jzzzzzzzzzzzzzzzzzzzzzzz").await,
        404,
        "JOB_NOT_FOUND",
    )
    .await;
    let response = app.get_job(&other_key, &mine).await;
    let message = expect_error(response, 404, "JOB_NOT_FOUND").await;
    assert_eq!(
        message, unknown,
        "another tenant's job must look like no job at all"
    );
    expect_error(
        app.get_job(&app.api_key, &theirs).await,
        404,
        "JOB_NOT_FOUND",
    )
    .await;
    let response = cancel(&app, &other_key, &mine).await;
    expect_error(response, 404, "JOB_NOT_FOUND").await;
    assert_eq!(job(&app, &mine).await["status"], "QUEUED");

    assert_eq!(item_ids(&list(&app, "").await), [mine.as_str()]);
    assert_eq!(
        item_ids(&list_as(&app, &other_key, "").await),
        [theirs.as_str()]
    );
    assert_eq!(
        item_ids(&list_as(&app, &other_key, "?status=QUEUED").await),
        [theirs]
    );
}

// ---------------------------------------------------------------------------------------
// GET /v1/jobs

#[tokio::test]
async fn list_is_newest_first_with_origin_fields_and_a_default_limit_of_50() {
    let app = spawn_app_with(|_| {}, API_ONLY).await;
    let mut submitted_ids = Vec::new();
    for i in 0..52 {
        let mode = if i % 2 == 0 { "draft" } else { "final" };
        submitted_ids
            .push(submitted(&app, json!({"prompt": format!("job {i}"), "mode": mode})).await);
    }
    let newest_first: Vec<String> = submitted_ids.iter().rev().cloned().collect();

    let page = list(&app, "").await;
    assert_eq!(item_ids(&page), newest_first[..50]);
    assert_eq!(page["hasMore"], true);
    let cursor = page["nextCursor"].as_str().expect("cursor");
    let mut last_created = i64::MAX;
    for item in page["items"].as_array().expect("items") {
        assert_eq!(
            keys(item),
            [
                "createdAt",
                "errorCode",
                "errorMessage",
                "id",
                "mode",
                "prompt",
                "resultUrls",
                "status",
                "updatedAt",
            ],
            "{item}"
        );
        let i = submitted_ids
            .iter()
            .position(|id| item["id"] == json!(id))
            .expect("known id");
        assert_eq!(item["prompt"], json!(format!("job {i}")));
        assert_eq!(item["mode"], if i % 2 == 0 { "draft" } else { "final" });
        assert_eq!(item["status"], "QUEUED");
        assert_eq!(item["resultUrls"], json!([]));
        assert_eq!(item["errorCode"], Value::Null);
        assert_eq!(item["errorMessage"], Value::Null);
        let created = timestamp_millis(&item["createdAt"]);
        assert_eq!(timestamp_millis(&item["updatedAt"]), created);
        assert!(created <= last_created, "not newest first");
        last_created = created;
    }

    let rest = list(&app, &format!("?cursor={cursor}")).await;
    assert_eq!(item_ids(&rest), newest_first[50..]);
    assert_eq!(rest["hasMore"], false);
    assert_eq!(rest["nextCursor"], Value::Null);

    let all = list(&app, "?limit=100").await;
    assert_eq!(item_ids(&all), newest_first);
    assert_eq!(all["hasMore"], false);
    assert_eq!(all["nextCursor"], Value::Null);
    let one = list(&app, "?limit=1").await;
    assert_eq!(item_ids(&one), newest_first[..1]);
    assert_eq!(one["hasMore"], true);
    // Exactly a full last page: no phantom next page.
    let exact = list(&app, "?limit=52").await;
    assert_eq!(exact["hasMore"], false);
    assert_eq!(exact["nextCursor"], Value::Null);
}

#[tokio::test]
async fn list_refuses_bad_limit_status_and_cursor() {
    let app = spawn_app_with(|_| {}, API_ONLY).await;
    submitted(&app, json!({"prompt": "a cat"})).await;
    for limit in ["0", "101", "-1", "abc", "1.5", "", "1e2", "99999999999"] {
        let response = list_raw(&app, &app.api_key, &format!("?limit={limit}")).await;
        let message = expect_error(response, 400, "INVALID_REQUEST").await;
        assert!(message.contains("limit"), "{limit:?}: {message}");
    }
    for status in ["queued", "DONE", "", "PENDING", "QUEUED,RUNNING"] {
        let response = list_raw(&app, &app.api_key, &format!("?status={status}")).await;
        let message = expect_error(response, 400, "INVALID_REQUEST").await;
        assert!(message.contains("status"), "{status:?}: {message}");
    }
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    for cursor in [
        "abc".to_owned(),
        "!!!".to_owned(),
        b64("v1:abc"),
        b64("v2:5"),
        b64("v1:0"),
        b64("v1:-3"),
        b64(""),
    ] {
        let response = list_raw(&app, &app.api_key, &format!("?cursor={cursor}")).await;
        let message = expect_error(response, 400, "INVALID_REQUEST").await;
        assert!(message.contains("cursor"), "{cursor:?}: {message}");
    }
    for limit in ["1", "100"] {
        list(&app, &format!("?limit={limit}")).await;
    }
}

#[tokio::test]
async fn list_filters_by_status() {
    let app = spawn_app_with(|_| {}, API_ONLY).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(submitted(&app, json!({"prompt": format!("job {i}")})).await);
    }
    for id in [&ids[1], &ids[3]] {
        assert_eq!(cancel(&app, &app.api_key, id).await.status(), 200);
    }
    let queued = list(&app, "?status=QUEUED").await;
    assert_eq!(item_ids(&queued), [ids[2].as_str(), ids[0].as_str()]);
    assert!(queued["items"]
        .as_array()
        .expect("items")
        .iter()
        .all(|item| item["status"] == "QUEUED"));
    let canceled = list(&app, "?status=CANCELED").await;
    assert_eq!(item_ids(&canceled), [ids[3].as_str(), ids[1].as_str()]);
    let succeeded = list(&app, "?status=SUCCEEDED").await;
    assert_eq!(
        succeeded,
        json!({"items": [], "hasMore": false, "nextCursor": null})
    );

    let first = list(&app, "?status=QUEUED&limit=1").await;
    assert_eq!(item_ids(&first), [ids[2].as_str()]);
    assert_eq!(first["hasMore"], true);
    let cursor = first["nextCursor"].as_str().expect("cursor");
    let second = list(&app, &format!("?status=QUEUED&limit=1&cursor={cursor}")).await;
    assert_eq!(item_ids(&second), [ids[0].as_str()]);
    assert_eq!(second["hasMore"], false);
    assert_eq!(second["nextCursor"], Value::Null);
}

#[tokio::test]
async fn pagination_yields_every_job_once_in_order() {
    let app = spawn_app_with(|_| {}, API_ONLY).await;
    let mut ids = Vec::new();
    for i in 0..23 {
        ids.push(submitted(&app, json!({"prompt": format!("job {i}")})).await);
    }
    ids.reverse();
    let (walked, sizes) = walk(&app, 5, async || {}).await;
    assert_eq!(sizes, [5, 5, 5, 5, 3]);
    assert_eq!(walked, ids, "no duplicates, no gaps, newest first");
}

#[tokio::test]
async fn pagination_is_stable_under_concurrent_inserts() {
    let app = spawn_app_with(|_| {}, API_ONLY).await;
    let mut ids = Vec::new();
    for i in 0..23 {
        ids.push(submitted(&app, json!({"prompt": format!("job {i}")})).await);
    }
    ids.reverse();
    let mut inserted = Vec::new();
    let (walked, sizes) = walk(&app, 5, async || {
        for _ in 0..2 {
            inserted.push(submitted(&app, json!({"prompt": "late"})).await);
        }
    })
    .await;
    assert_eq!(sizes, [5, 5, 5, 5, 3]);
    assert_eq!(
        walked, ids,
        "the walk saw exactly the jobs that existed when it began"
    );
    let unique: HashSet<&String> = walked.iter().collect();
    assert_eq!(unique.len(), walked.len());
    assert_eq!(inserted.len(), 8);
    // A fresh first page starts with the newcomers.
    let fresh = list(&app, "?limit=100").await;
    let mut expected: Vec<String> = inserted.iter().rev().cloned().collect();
    expected.extend(ids);
    assert_eq!(item_ids(&fresh), expected);
}

// ---------------------------------------------------------------------------------------
// DELETE /v1/jobs/{jobId}

#[tokio::test]
async fn unfinished_jobs_can_be_canceled_finished_ones_cannot() {
    let app = spawn_app_with(|_| {}, API_ONLY).await;
    let queued = submitted(&app, json!({"prompt": "queued"})).await;
    let response = cancel(&app, &app.api_key, &queued).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body, json!({"jobId": queued, "status": "CANCELED"}));
    let view = job(&app, &queued).await;
    assert_eq!(view["status"], "CANCELED");
    assert_eq!(view["attempts"], 0);
    assert_eq!(view["startedAt"], Value::Null);
    assert!(timestamp_millis(&view["finishedAt"]) >= timestamp_millis(&view["createdAt"]));
    assert_eq!(
        timestamp_millis(&view["updatedAt"]),
        timestamp_millis(&view["finishedAt"])
    );
    assert!(view.get("queuePosition").is_none(), "{view}");
    let message = expect_error(
        cancel(&app, &app.api_key, &queued).await,
        400,
        "INVALID_STATE",
    )
    .await;
    assert!(message.contains("CANCELED"), "{message}");
    assert_eq!(event_statuses(&app, &queued).await, ["QUEUED", "CANCELED"]);

    // A worker takes the next job: RUNNING can be canceled too (its attempt is fenced out).
    let store = &app.app.store;
    let running_now = submitted(&app, json!({"prompt": "running now"})).await;
    let claimed = store
        .job_claim("test-worker", 1, Duration::from_secs(60))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].job.id, running_now);
    let response = cancel(&app, &app.api_key, &running_now).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body, json!({"jobId": running_now, "status": "CANCELED"}));
    let late = store
        .job_finish(
            &running_now,
            claimed[0].fence,
            Finish::Succeeded {
                result_keys: vec!["late.png".into()],
                meta: None,
            },
        )
        .await;
    assert!(matches!(late, Err(StoreError::LeaseLost)), "{late:?}");
    let view = job(&app, &running_now).await;
    assert_eq!(view["status"], "CANCELED");
    assert_eq!(view["resultUrls"], json!([]));
    assert_eq!(
        event_statuses(&app, &running_now).await,
        ["QUEUED", "RUNNING", "CANCELED"]
    );

    let running = submitted(&app, json!({"prompt": "running"})).await;
    let claimed = store
        .job_claim("test-worker", 1, Duration::from_secs(60))
        .await
        .expect("claim");
    assert_eq!(claimed[0].job.id, running);

    // Its attempt fails retryably: RETRYING can be canceled.
    store
        .job_finish(
            &running,
            claimed[0].fence,
            Finish::Retry {
                run_at: now_millis() + 3_600_000,
                error_code: "UPSTREAM_BUSY".into(),
                error_message: "try again later".into(),
            },
        )
        .await
        .expect("finish");
    let view = job(&app, &running).await;
    assert_eq!(view["status"], "RETRYING");
    assert_eq!(view["errorCode"], "UPSTREAM_BUSY");
    let response = cancel(&app, &app.api_key, &running).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body, json!({"jobId": running, "status": "CANCELED"}));
    assert_eq!(job(&app, &running).await["status"], "CANCELED");
    assert_eq!(
        event_statuses(&app, &running).await,
        ["QUEUED", "RUNNING", "RETRYING", "CANCELED"]
    );

    // FAILED cannot be canceled.
    let failed = submitted(&app, json!({"prompt": "failed"})).await;
    let claimed = store
        .job_claim("test-worker", 1, Duration::from_secs(60))
        .await
        .expect("claim");
    assert_eq!(claimed[0].job.id, failed);
    store
        .job_finish(
            &failed,
            claimed[0].fence,
            Finish::Failed {
                error_code: "CONTENT_BLOCKED".into(),
                error_message: "no".into(),
            },
        )
        .await
        .expect("finish");
    let message = expect_error(
        cancel(&app, &app.api_key, &failed).await,
        400,
        "INVALID_STATE",
    )
    .await;
    assert!(message.contains("FAILED"), "{message}");
    let view = job(&app, &failed).await;
    assert_eq!(view["status"], "FAILED");
    assert_eq!(view["errorCode"], "CONTENT_BLOCKED");
    assert_eq!(view["error"], "no");
}

#[tokio::test]
async fn a_canceled_job_is_never_run() {
    let app = spawn_app_with(|_| {}, API_ONLY).await;
    let canceled = submitted(&app, json!({"prompt": "never"})).await;
    assert_eq!(cancel(&app, &app.api_key, &canceled).await.status(), 200);
    let probe = submitted(&app, json!({"prompt": "after it"})).await;
    // A worker arrives; it takes jobs oldest first, so by the time the later job is done it
    // has passed the canceled one.
    let _worker = app.start_worker();
    let done = app.wait_for(&probe, TERMINAL, WAIT).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    let view = job(&app, &canceled).await;
    assert_eq!(view["status"], "CANCELED");
    assert_eq!(view["attempts"], 0);
    assert_eq!(view["startedAt"], Value::Null);
    assert_eq!(view["resultUrls"], json!([]));
    assert_eq!(
        event_statuses(&app, &canceled).await,
        ["QUEUED", "CANCELED"]
    );
    app.shutdown().await;
}

#[tokio::test]
async fn cancel_after_cancels_a_job_that_has_not_started() {
    // One slot, held by a slow job: later jobs wait in the queue while maintenance runs.
    let app = spawn_app_with(
        |c| {
            c.worker.concurrency = 1;
            c.worker.shutdown_grace_secs = 0;
            c.providers.local.delay_ms = 20_000;
        },
        easel::server::Roles::ALL,
    )
    .await;
    let blocker = submitted(&app, json!({"prompt": "slow"})).await;
    app.wait_for(&blocker, &["RUNNING"], WAIT).await;
    let response = submit_with(
        &app,
        json!({"prompt": "impatient"}),
        &[("Cancel-After", "1")],
    )
    .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], "QUEUED");
    let impatient = body["jobId"].as_str().expect("jobId").to_owned();
    let response = submit_with(
        &app,
        json!({"prompt": "patient"}),
        &[("Cancel-After", "1h")],
    )
    .await;
    assert_eq!(response.status(), 202);
    let patient = response.json::<Value>().await.expect("json")["jobId"]
        .as_str()
        .expect("jobId")
        .to_owned();

    let view = app.wait_for(&impatient, TERMINAL, WAIT).await;
    assert_eq!(view["status"], "CANCELED", "{view}");
    assert_eq!(view["errorCode"], "CANCEL_AFTER_ELAPSED");
    let message = view["errorMessage"].as_str().expect("errorMessage");
    assert!(!message.is_empty());
    assert_eq!(view["error"], json!(message));
    assert_eq!(view["attempts"], 0);
    assert_eq!(view["startedAt"], Value::Null);
    let created = timestamp_millis(&view["createdAt"]);
    assert_eq!(timestamp_millis(&view["cancelAt"]), created + 1000);
    assert!(
        timestamp_millis(&view["finishedAt"]) >= created + 1000,
        "{view}"
    );
    assert_eq!(
        event_statuses(&app, &impatient).await,
        ["QUEUED", "CANCELED"]
    );

    assert_eq!(job(&app, &patient).await["status"], "QUEUED");
    assert_eq!(job(&app, &blocker).await["status"], "RUNNING");
    app.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Deadlines

#[tokio::test]
async fn a_running_job_past_its_deadline_fails_with_job_timeout() {
    let app = spawn_app_with(
        |c| {
            c.worker.job_timeout_secs = 1;
            c.worker.shutdown_grace_secs = 0;
            c.providers.local.delay_ms = 5_000;
        },
        easel::server::Roles::ALL,
    )
    .await;
    let id = submitted(&app, json!({"prompt": "slow"})).await;
    let view = app.wait_for(&id, TERMINAL, Duration::from_secs(4)).await;
    assert_eq!(view["status"], "FAILED", "{view}");
    assert_eq!(view["errorCode"], "JOB_TIMEOUT");
    assert!(!view["errorMessage"]
        .as_str()
        .expect("errorMessage")
        .is_empty());
    assert_eq!(view["error"], view["errorMessage"]);
    assert_eq!(view["resultUrls"], json!([]));
    let created = timestamp_millis(&view["createdAt"]);
    let finished = timestamp_millis(&view["finishedAt"]);
    assert!(finished - created >= 1000, "{view}");
    assert_eq!(
        event_statuses(&app, &id).await,
        ["QUEUED", "RUNNING", "FAILED"]
    );
    let events = app.app.store.job_events(&id).await.expect("events");
    assert_eq!(events[2].error_code.as_deref(), Some("JOB_TIMEOUT"));
    app.shutdown().await;
}

#[tokio::test]
async fn a_waiting_job_past_its_deadline_fails_with_job_timeout() {
    let app = spawn_app_with(|c| c.worker.job_timeout_secs = 1, API_ONLY).await;
    let id = submitted(&app, json!({"prompt": "never picked up"})).await;
    let created = timestamp_millis(&job(&app, &id).await["createdAt"]);
    // The maintenance pass, as it would run once the deadline has passed.
    let store = &app.app.store;
    let done = store.job_maintain(created + 999).await.expect("maintain");
    assert_eq!(done.expired, 0, "not due yet");
    let done = store.job_maintain(created + 1000).await.expect("maintain");
    assert_eq!(done.expired, 1);
    let view = job(&app, &id).await;
    assert_eq!(view["status"], "FAILED");
    assert_eq!(view["errorCode"], "JOB_TIMEOUT");
    assert_eq!(view["attempts"], 0);
    assert_eq!(event_statuses(&app, &id).await, ["QUEUED", "FAILED"]);
    expect_error(cancel(&app, &app.api_key, &id).await, 400, "INVALID_STATE").await;
}

// ---------------------------------------------------------------------------------------
// Idempotency-Key

#[tokio::test]
async fn same_key_and_body_replays_the_same_job() {
    let app = spawn_app_with(|_| {}, API_ONLY).await;
    let body = json!({"prompt": "a cat", "mode": "draft"});
    let first = app
        .submit_as(&app.api_key, body.clone(), Some("order-1"))
        .await;
    assert_eq!(first.status(), 202);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.expect("json");
    let again = app
        .submit_as(&app.api_key, body.clone(), Some("order-1"))
        .await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.expect("json");
    assert_eq!(again, first);
    assert_eq!(keys(&again), ["jobId", "status"]);
    // The replay reports the job's status now.
    let id = first["jobId"].as_str().expect("jobId");
    assert_eq!(cancel(&app, &app.api_key, id).await.status(), 200);
    let late = app.submit_as(&app.api_key, body, Some("order-1")).await;
    assert_eq!(late.status(), 202);
    let late: Value = late.json().await.expect("json");
    assert_eq!(late, json!({"jobId": id, "status": "CANCELED"}));
    assert_eq!(item_ids(&list(&app, "").await), [id.to_owned()]);
    // Defaults are part of the request: an explicit "final" is the same request as none.
    let a = app
        .submit_as(&app.api_key, json!({"prompt": "x"}), Some("order-2"))
        .await;
    let a: Value = a.json().await.expect("json");
    let b = app
        .submit_as(
            &app.api_key,
            json!({"prompt": "x", "mode": "final"}),
            Some("order-2"),
        )
        .await;
    assert_eq!(b.headers()["idempotent-replayed"], "true");
    assert_eq!(b.json::<Value>().await.expect("json")["jobId"], a["jobId"]);
}

#[tokio::test]
async fn fifty_concurrent_identical_submits_make_one_job() {
    // 50 at once are new work until the first commits: a burst that lets them all in keeps
    // this test about idempotency, not the rate.
    let app = spawn_app_with(|c| c.limits.tenant_burst = 64, API_ONLY).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let request = app
            .http
            .post(app.url(GENERATE))
            .bearer_auth(&app.api_key)
            .header("Idempotency-Key", "burst-7")
            .json(&json!({"prompt": "one of many"}));
        tasks.spawn(async move {
            let response = request.send().await.expect("send");
            let status = response.status().as_u16();
            let replayed = response.headers().get("idempotent-replayed").is_some();
            let body: Value = response.json().await.expect("json");
            (status, replayed, body)
        });
    }
    let mut ids = HashSet::new();
    let mut originals = 0;
    while let Some(result) = tasks.join_next().await {
        let (status, replayed, body) = result.expect("task");
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["status"], "QUEUED");
        ids.insert(body["jobId"].as_str().expect("jobId").to_owned());
        if !replayed {
            originals += 1;
        }
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(originals, 1, "exactly one response created the job");
    let page = list(&app, "").await;
    assert_eq!(item_ids(&page), ids.into_iter().collect::<Vec<_>>());
}

#[tokio::test]
async fn same_key_with_a_different_body_is_422() {
    let app = spawn_app_with(|_| {}, API_ONLY).await;
    let id = submitted_as_with_key(&app, json!({"prompt": "a cat"}), "k-1").await;
    for body in [
        json!({"prompt": "a dog"}),
        json!({"prompt": "a cat", "mode": "draft"}),
        json!({"prompt": "a cat", "inputImageUrl": "https://example.com/a.png"}),
        json!({"prompt": "a cat", "seed": 1}),
    ] {
        let response = app.submit_as(&app.api_key, body.clone(), Some("k-1")).await;
        let message = expect_error(response, 422, "IDEMPOTENCY_KEY_REUSED").await;
        assert!(message.contains("Idempotency-Key"), "{body}: {message}");
    }
    assert_eq!(item_ids(&list(&app, "").await), [id]);
}

async fn submitted_as_with_key(app: &TestApp, body: Value, key: &str) -> String {
    let response = app.submit_as(&app.api_key, body, Some(key)).await;
    assert_eq!(response.status(), 202);
    assert!(response.headers().get("idempotent-replayed").is_none());
    response.json::<Value>().await.expect("json")["jobId"]
        .as_str()
        .expect("jobId")
        .to_owned()
}

#[tokio::test]
async fn idempotency_keys_belong_to_one_tenant() {
    let app = spawn_app_with(|_| {}, API_ONLY).await;
    let (_, other_key) = app.new_tenant("other", 10_000, 50).await;
    let body = json!({"prompt": "a cat"});
    let mine = submitted_as_with_key(&app, body.clone(), "shared").await;
    let response = app
        .submit_as(&other_key, body.clone(), Some("shared"))
        .await;
    assert_eq!(response.status(), 202);
    assert!(response.headers().get("idempotent-replayed").is_none());
    let theirs = response.json::<Value>().await.expect("json")["jobId"]
        .as_str()
        .expect("jobId")
        .to_owned();
    assert_ne!(mine, theirs);
    // A different body under the same key is fine for the other tenant too.
    let response = app
        .submit_as(&other_key, json!({"prompt": "a dog"}), Some("mine-only"))
        .await;
    assert_eq!(response.status(), 202);
    let _ = submitted_as_with_key(&app, json!({"prompt": "a fish"}), "mine-only").await;
    assert_eq!(item_ids(&list_as(&app, &other_key, "").await).len(), 2);
    assert_eq!(item_ids(&list(&app, "").await).len(), 2);
}

#[tokio::test]
async fn a_refused_submit_does_not_consume_its_key() {
    let app = spawn_app_with(|_| {}, API_ONLY).await;
    let response = app
        .submit_as(&app.api_key, json!({}), Some("k-bad-body"))
        .await;
    expect_error(response, 400, "INVALID_REQUEST").await;
    let id = submitted_as_with_key(&app, json!({"prompt": "a cat"}), "k-bad-body").await;
    // Now the key is taken.
    let response = app
        .submit_as(&app.api_key, json!({"prompt": "a dog"}), Some("k-bad-body"))
        .await;
    expect_error(response, 422, "IDEMPOTENCY_KEY_REUSED").await;

    let response = submit_with(
        &app,
        json!({"prompt": "a cat"}),
        &[
            ("Idempotency-Key", "k-bad-header"),
            ("Cancel-After", "soon"),
        ],
    )
    .await;
    expect_error(response, 400, "INVALID_REQUEST").await;
    let second = submitted_as_with_key(&app, json!({"prompt": "a dog"}), "k-bad-header").await;
    assert_eq!(item_ids(&list(&app, "").await), [second, id]);
}

// ---------------------------------------------------------------------------------------
// Routing

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405_as_json() {
    let app = spawn_app_with(|_| {}, API_ONLY).await;
    for path in [
        "/",
        "/nope",
        "/v1",
        "/v1/jobs/a/b",
        "/v1/images",
        "/v2/jobs",
        "/health/",
    ] {
        let response = app.get(path).await;
        expect_error(response, 404, "NOT_FOUND").await;
    }
    let wrong = [
        (Method::DELETE, "/health"),
        (Method::POST, "/health"),
        (Method::GET, GENERATE),
        (Method::PUT, GENERATE),
        (Method::PUT, "/v1/jobs"),
        (Method::POST, "/v1/jobs"),
        (Method::DELETE, "/v1/jobs"),
        (Method::POST, "/v1/jobs/abc"),
        (Method::PATCH, "/v1/jobs/abc"),
        (Method::PUT, "/v1/jobs/abc"),
    ];
    for (method, path) in wrong {
        let response = app
            .http
            .request(method.clone(), app.url(path))
            .bearer_auth(&app.api_key)
            .json(&json!({"prompt": "a cat"}))
            .send()
            .await
            .expect("send");
        expect_error(response, 405, "METHOD_NOT_ALLOWED").await;
    }
}

// ---------------------------------------------------------------------------------------
// Node heartbeats

#[tokio::test]
async fn a_clean_shutdown_removes_the_node_heartbeat() {
    let app = spawn_app().await;
    let store = app.app.store.clone();
    let deadline = std::time::Instant::now() + WAIT;
    while store.nodes_live(0).await.expect("live") == 0 {
        assert!(std::time::Instant::now() < deadline, "no heartbeat");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.shutdown().await;
    assert_eq!(store.nodes_live(0).await.expect("live"), 0);
}
