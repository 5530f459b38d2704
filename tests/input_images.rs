//! `inputImageUrl`: fetched with SSRF rules, size and type checks; bad inputs end clearly.

mod common;

use std::time::Duration;

use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use serde_json::{json, Value};

/// An image host on 127.0.0.2 (a loopback address distinct from 127.0.0.1).
async fn image_host() -> String {
    let png = easel::providers::local::render::render_png("input", 1, 8, 8);
    let app = axum::Router::new()
        .route(
            "/cat.png",
            get(move || async move { ([(header::CONTENT_TYPE, "image/png")], png.clone()) }),
        )
        .route(
            "/page.html",
            get(|| async { ([(header::CONTENT_TYPE, "text/html")], "<html></html>") }),
        )
        .route(
            "/fake.png",
            get(|| async { ([(header::CONTENT_TYPE, "image/png")], "not really a png") }),
        )
        .route(
            "/huge.png",
            get(|| async {
                ([(header::CONTENT_TYPE, "image/png")], vec![0u8; 64 * 1024]).into_response()
            }),
        )
        .route(
            "/missing.png",
            get(|| async { axum::http::StatusCode::NOT_FOUND }),
        )
        .route(
            "/to-private",
            get(
                |port: axum::extract::Query<std::collections::HashMap<String, String>>| async move {
                    Redirect::temporary(&format!(
                        "http://127.0.0.1:{}/cat.png",
                        port.0.get("port").cloned().unwrap_or_default()
                    ))
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0")
        .await
        .expect("bind 127.0.0.2");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn run(app: &common::TestApp, url: &str) -> Value {
    let response = app
        .submit(json!({"prompt": "make it blue", "mode": "draft", "inputImageUrl": url}))
        .await;
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.expect("json")["jobId"]
        .as_str()
        .expect("id")
        .to_owned();
    app.wait_for(&id, &["SUCCEEDED", "FAILED"], Duration::from_secs(10))
        .await
}

#[tokio::test]
async fn input_images_are_fetched_checked_and_refused_clearly() {
    let host = image_host().await;
    let app = common::spawn_app_with(
        |c| {
            c.inputs.allow_networks = vec!["127.0.0.2/32".into()];
            c.inputs.max_bytes = 16 * 1024;
        },
        easel::server::Roles::ALL,
    )
    .await;

    let ok = run(&app, &format!("{host}/cat.png")).await;
    assert_eq!(ok["status"], "SUCCEEDED", "{ok}");

    for (path, code) in [
        ("/page.html", "INPUT_IMAGE_UNSUPPORTED"),
        ("/fake.png", "INPUT_IMAGE_UNSUPPORTED"),
        ("/huge.png", "INPUT_IMAGE_TOO_LARGE"),
        ("/missing.png", "INPUT_IMAGE_FETCH_FAILED"),
    ] {
        let job = run(&app, &format!("{host}{path}")).await;
        assert_eq!(job["status"], "FAILED", "{path}: {job}");
        assert_eq!(job["errorCode"], code, "{path}: {job}");
        assert_eq!(job["attempts"], 1, "{path}: a bad input is not retried");
    }

    // A redirect from an allowed host to a forbidden one is refused at the hop.
    let port = app.base.rsplit(':').next().expect("port");
    let job = run(&app, &format!("{host}/to-private?port={port}")).await;
    assert_eq!(job["errorCode"], "INPUT_IMAGE_FORBIDDEN_ADDRESS", "{job}");

    // A literal private address is known bad at submit: 400, no job.
    for url in [
        "http://127.0.0.1/x.png",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/a.png",
        "http://10.0.0.1/a.png",
    ] {
        let response = app
            .submit(json!({"prompt": "x", "inputImageUrl": url}))
            .await;
        assert_eq!(response.status(), 400, "{url}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"], "INVALID_REQUEST");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or("")
                .contains("inputImageUrl"),
            "{body}"
        );
    }
    app.shutdown().await;
}
