//! Browsers on other origins: CORS preflights and actual requests on every kind of route (job
//! API, events, files, webhooks), errors included, with the default `*` and with a list of
//! origins; and the SaaS origin's `X-API-Key` header, accepted and refused like
//! `Authorization: Bearer`.

mod common;

use std::time::Duration;

use common::{expect_error, header, spawn_app, spawn_app_with, TestApp, API_ONLY};
use reqwest::Method;
use serde_json::{json, Value};

const PAGE: &str = "http://localhost:5173";

fn list(r: &reqwest::Response, name: &str) -> Vec<String> {
    r.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty())
        .collect()
}

/// What a browser sends before a request it may not send outright.
async fn preflight(
    app: &TestApp,
    origin: &str,
    method: &str,
    path: &str,
    headers: &str,
) -> reqwest::Response {
    app.http
        .request(Method::OPTIONS, app.url(path))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", method)
        .header("Access-Control-Request-Headers", headers)
        .send()
        .await
        .expect("send")
}

/// A preflight answer that lets `method` with `headers` through from `origin`.
fn assert_preflight_allows(r: &reqwest::Response, origin: &str, method: &str, headers: &[&str]) {
    assert!(
        matches!(r.status().as_u16(), 200 | 204),
        "preflight status {}",
        r.status()
    );
    assert_eq!(header(r, "access-control-allow-origin"), origin);
    let methods = list(r, "access-control-allow-methods");
    assert!(
        methods.contains(&method.to_ascii_lowercase()),
        "{method} not in {methods:?}"
    );
    let allowed = list(r, "access-control-allow-headers");
    for h in headers {
        assert!(allowed.contains(&h.to_string()), "{h} not in {allowed:?}");
    }
    let max_age: u64 = header(r, "access-control-max-age")
        .parse()
        .expect("max age");
    assert!(max_age >= 60, "{max_age}");
}

/// An actual response a page on another origin may read, with these headers exposed.
fn assert_readable(r: &reqwest::Response, origin: &str) {
    assert_eq!(header(r, "access-control-allow-origin"), origin, "{r:?}");
    let exposed = list(r, "access-control-expose-headers");
    for h in [
        "ratelimit",
        "ratelimit-policy",
        "retry-after",
        "idempotent-replayed",
        "etag",
        "location",
    ] {
        assert!(exposed.contains(&h.to_owned()), "{h} not in {exposed:?}");
    }
}

const EASEL_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "idempotency-key",
    "cancel-after",
    "last-event-id",
    "x-api-key",
    "mj-api-secret",
    "prefer",
];

#[tokio::test]
async fn every_kind_of_route_answers_preflights_and_is_readable_from_any_origin() {
    let app = spawn_app().await;
    let all = EASEL_HEADERS.join(", ");
    // Job API: submit, read, list, cancel.
    for (method, path) in [
        ("POST", "/v1/images/generate"),
        ("GET", "/v1/jobs/job_x"),
        ("GET", "/v1/jobs"),
        ("DELETE", "/v1/jobs/job_x"),
        ("GET", "/v1/events"),
        ("GET", "/v1/jobs/job_x/events"),
        ("GET", "/v1/files/t/x.png"),
        ("GET", "/v1/webhook"),
        ("PUT", "/v1/webhook"),
        ("POST", "/v1/webhooks/deliveries/d/replay"),
        ("PATCH", "/admin/v1/tenants/t"),
    ] {
        let r = preflight(&app, PAGE, method, path, &all).await;
        assert_preflight_allows(&r, "*", method, EASEL_HEADERS);
        assert!(r.text().await.expect("body").is_empty(), "{path}");
    }

    // Actual requests, each with the page's Origin.
    let submit = app
        .http
        .post(app.url("/v1/images/generate"))
        .header("Origin", PAGE)
        .bearer_auth(&app.api_key)
        .header("Idempotency-Key", "cors-1")
        .json(&json!({"prompt": "a cat", "mode": "draft"}))
        .send()
        .await
        .expect("send");
    assert_eq!(submit.status(), 202);
    assert_readable(&submit, "*");
    assert!(!header(&submit, "ratelimit").is_empty());
    let job_id = submit.json::<Value>().await.expect("json")["jobId"]
        .as_str()
        .expect("id")
        .to_owned();
    let done = app
        .wait_for(&job_id, &["SUCCEEDED"], Duration::from_secs(10))
        .await;
    let get = |path: String| {
        app.http
            .get(app.url(&path))
            .header("Origin", PAGE)
            .bearer_auth(&app.api_key)
            .send()
    };
    for path in [
        format!("/v1/jobs/{job_id}"),
        "/v1/jobs".to_owned(),
        format!("/v1/jobs/{job_id}/webhooks"),
        "/v1/webhooks/deliveries".to_owned(),
    ] {
        let r = get(path.clone()).await.expect("send");
        assert_eq!(r.status(), 200, "{path}");
        assert_readable(&r, "*");
    }
    let file_url = done["resultUrls"][0].as_str().expect("url").to_owned();
    let file = app
        .http
        .get(&file_url)
        .header("Origin", PAGE)
        .send()
        .await
        .expect("send");
    assert_eq!(file.status(), 200);
    assert_readable(&file, "*");
    assert!(!header(&file, "etag").is_empty());
    // A live stream: the headers come first, then events.
    let stream = get(format!("/v1/jobs/{job_id}/events"))
        .await
        .expect("send");
    assert_eq!(stream.status(), 200);
    assert_readable(&stream, "*");
    drop(stream);
    let webhook = app
        .http
        .put(app.url("/v1/webhook"))
        .header("Origin", PAGE)
        .bearer_auth(&app.api_key)
        .json(&json!({"url": "https://hooks.example.com/easel"}))
        .send()
        .await
        .expect("send");
    assert!(webhook.status().is_success(), "{}", webhook.status());
    assert_readable(&webhook, "*");
    // Errors too: a page must be able to read why it was refused.
    let refused = app
        .http
        .get(app.url("/v1/jobs"))
        .header("Origin", PAGE)
        .bearer_auth("img_wrong")
        .send()
        .await
        .expect("send");
    assert_readable(&refused, "*");
    expect_error(refused, 401, "INVALID_API_KEY").await;
    let missing = get("/v1/jobs/job_missing".into()).await.expect("send");
    assert_readable(&missing, "*");
    expect_error(missing, 404, "JOB_NOT_FOUND").await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_list_of_origins_echoes_the_matching_one_and_varies_on_origin() {
    let app = spawn_app_with(
        |c| c.server.cors_origins = vec![PAGE.into(), "https://app.example.com".into()],
        API_ONLY,
    )
    .await;
    for origin in [PAGE, "https://app.example.com"] {
        let r = preflight(
            &app,
            origin,
            "POST",
            "/v1/images/generate",
            "authorization, content-type",
        )
        .await;
        assert_preflight_allows(&r, origin, "POST", &["authorization", "content-type"]);
        assert!(list(&r, "vary").contains(&"origin".to_owned()), "{r:?}");
        let actual = app
            .http
            .get(app.url("/v1/jobs"))
            .header("Origin", origin)
            .bearer_auth(&app.api_key)
            .send()
            .await
            .expect("send");
        assert_eq!(actual.status(), 200);
        assert_readable(&actual, origin);
        assert!(list(&actual, "vary").contains(&"origin".to_owned()));
    }
    // Another origin gets no permission (the browser then hides the answer from the page).
    let stranger = preflight(
        &app,
        "https://evil.example",
        "GET",
        "/v1/jobs",
        "authorization",
    )
    .await;
    assert!(stranger
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    let actual = app
        .http
        .get(app.url("/v1/jobs"))
        .header("Origin", "https://evil.example")
        .bearer_auth(&app.api_key)
        .send()
        .await
        .expect("send");
    assert!(actual
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    assert!(list(&actual, "vary").contains(&"origin".to_owned()));
    app.shutdown().await;
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
fn cors_origin_of_the_editor_origin_sets_the_allowed_origins() {
    use figment::Jail;
    Jail::expect_with(|jail| {
        jail.set_env("CORS_ORIGIN", "http://localhost:5173");
        let config = easel::config::Config::load(None, &Default::default()).expect("load");
        assert_eq!(config.server.cors_origins, ["http://localhost:5173"]);
        jail.set_env(
            "CORS_ORIGIN",
            "http://localhost:5173,https://app.example.com",
        );
        let config = easel::config::Config::load(None, &Default::default()).expect("load");
        assert_eq!(
            config.server.cors_origins,
            ["http://localhost:5173", "https://app.example.com"]
        );
        jail.set_env("CORS_ORIGIN", "localhost:5173/app");
        let err = easel::config::Config::load(None, &Default::default()).expect_err("refused");
        assert!(err.to_string().contains("server.cors_origins"), "{err}");
        Ok(())
    });
    let config = easel::config::Config::default();
    assert_eq!(config.server.cors_origins, ["*"]);
}

// ---- X-API-Key ----

/// One request of each kind, authenticated by `auth` (a header name and value).
async fn with_auth(
    app: &TestApp,
    method: Method,
    path: &str,
    auth: (&str, &str),
) -> reqwest::Response {
    let mut request = app
        .http
        .request(method.clone(), app.url(path))
        .header(auth.0, auth.1);
    if method == Method::POST {
        request = request.json(&json!({"prompt": "a cat"}));
    }
    request.send().await.expect("send")
}

#[tokio::test]
async fn x_api_key_is_accepted_and_refused_like_bearer() {
    let app = spawn_app_with(|_| {}, API_ONLY).await;
    let job_id = app
        .submit(json!({"prompt": "x"}))
        .await
        .json::<Value>()
        .await
        .expect("json")["jobId"]
        .as_str()
        .expect("id")
        .to_owned();
    let routes = [
        (Method::POST, "/v1/images/generate".to_owned(), 202),
        (Method::GET, format!("/v1/jobs/{job_id}"), 200),
        (Method::GET, "/v1/jobs".to_owned(), 200),
        (Method::GET, format!("/v1/jobs/{job_id}/webhooks"), 200),
        (Method::GET, "/v1/webhooks/deliveries".to_owned(), 200),
        (Method::GET, format!("/v1/jobs/{job_id}/events"), 200),
    ];
    let bearer = format!("Bearer {}", app.api_key);
    for (method, path, ok) in &routes {
        for auth in [
            ("Authorization", bearer.as_str()),
            ("X-API-Key", app.api_key.as_str()),
        ] {
            let r = with_auth(&app, method.clone(), path, auth).await;
            assert_eq!(r.status().as_u16(), *ok, "{method} {path} with {}", auth.0);
        }
        // The same refusals: a wrong key, an empty header, no key at all.
        for auth in [
            ("Authorization", "Bearer img_wrong"),
            ("X-API-Key", "img_wrong"),
        ] {
            let r = with_auth(&app, method.clone(), path, auth).await;
            let message = expect_error(r, 401, "INVALID_API_KEY").await;
            assert_eq!(message, "invalid API key", "{path} with {}", auth.0);
        }
        for auth in [("Authorization", "Basic abc"), ("X-API-Key", " ")] {
            let r = with_auth(&app, method.clone(), path, auth).await;
            let message = expect_error(r, 401, "INVALID_API_KEY").await;
            assert!(
                message.contains("malformed"),
                "{path} with {}: {message}",
                auth.0
            );
        }
        let r = with_auth(&app, method.clone(), path, ("X-Other", "x")).await;
        let message = expect_error(r, 401, "INVALID_API_KEY").await;
        assert!(message.contains("X-API-Key"), "{message}");
    }
    // The job's cancel, last (it changes the job).
    let r = with_auth(
        &app,
        Method::DELETE,
        &format!("/v1/jobs/{job_id}"),
        ("X-API-Key", &app.api_key),
    )
    .await;
    assert_eq!(r.status(), 200);

    // WebSocket: the header before the upgrade, right or wrong.
    let ws_url = format!("{}/v1/events/ws", app.base.replace("http://", "ws://"));
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            ws_url.as_str(),
        )
        .expect("request");
    request
        .headers_mut()
        .insert("x-api-key", app.api_key.parse().expect("value"));
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("connect");
    use futures::StreamExt;
    let ready = socket.next().await.expect("frame").expect("message");
    let ready: Value = serde_json::from_str(ready.to_text().expect("text")).expect("json");
    assert_eq!(ready["type"], "ready");
    assert_eq!(ready["tenantId"], app.tenant_id.as_str());
    let mut wrong = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        ws_url.as_str(),
    )
    .expect("request");
    wrong
        .headers_mut()
        .insert("x-api-key", "img_wrong".parse().expect("value"));
    match tokio_tungstenite::connect_async(wrong).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("expected 401 before the upgrade, got {other:?}"),
    }
    app.shutdown().await;
}
